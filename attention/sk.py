"""Selective Kernel convolution (SKNet)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Attention, mechanism
from ._registry import HParam, divisors


def _sk_rule(channels: int, hp: dict) -> list[tuple[str, str]]:
    if channels % hp["groups"]:
        return [("groups", f"must divide channels; valid at {channels} channels: {divisors(channels)}")]
    return []


@mechanism(
    name="sk",
    aliases=("selectivekernel", "selective_kernel"),
    title="Selective Kernel",
    arxiv="1903.06586",
    reference="CVPR 2019; official code implus/SKNet (Caffe prototxt)",
    placement="replace_conv3x3",
    placement_note="replaces the 3x3 grouped conv of the ResNeXt bottleneck; stride applies in every branch",
    hparams=(
        HParam("reduction", "r", 16, int, "d = max(channels // r, L)", low=1),
        HParam("min_hidden", "L", 32, int, "lower bound L of the fuse width d", low=1),
        HParam("groups", "g", 32, int, "groups of each branch convolution (official 32)", low=1),
        HParam(
            "branches",
            "M",
            2,
            int,
            "paths: 3x3 convs with dilation 1..M (official M=2: 3x3 and a dilated 3x3 standing for 5x5)",
            low=2,
            high=4,
        ),
    ),
    rule=_sk_rule,
)
class SelectiveKernel(Attention):
    """Split: M grouped 3x3 convs with dilations 1..M, each + BN + ReLU. Fuse: s = GAP(sum of branches),
    z = ReLU(BN(W s)) with a bias-free W to d = max(C/r, L). Select: a bias-free projection to M*C
    logits, softmax across branches, y = sum_m a_m * U_m. ``stride`` (default 1) applies in every
    branch, for use as a drop-in replacement of a strided 3x3 convolution."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        min_hidden: int = 32,
        groups: int = 32,
        branches: int = 2,
        *,
        stride: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction, min_hidden=min_hidden, groups=groups, branches=branches)
        dd = dict(device=device, dtype=dtype)
        hp = self.hparams
        self.branch_count = hp["branches"]
        self.stride = stride
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    channels, channels, 3, stride=stride, padding=d, dilation=d, groups=hp["groups"], bias=False, **dd
                ),
                nn.BatchNorm2d(channels, **dd),
                nn.ReLU(inplace=True),
            )
            for d in range(1, hp["branches"] + 1)
        )
        hidden = max(channels // hp["reduction"], hp["min_hidden"])
        self.fc = nn.Linear(channels, hidden, bias=False, **dd)
        self.bn = nn.BatchNorm1d(hidden, **dd)
        self.act = nn.ReLU(inplace=True)
        self.select = nn.Linear(hidden, hp["branches"] * channels, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [p(x) for p in self.paths]
        total = feats[0]
        for f in feats[1:]:
            total = total + f
        z = self.act(self.bn(self.fc(total.mean((2, 3)))))
        a = self.select(z).reshape(x.shape[0], self.branch_count, -1).softmax(1)
        out = feats[0] * a[:, 0, :, None, None]
        for m in range(1, self.branch_count):
            out = out + feats[m] * a[:, m, :, None, None]
        return out
