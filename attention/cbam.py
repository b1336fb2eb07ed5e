"""Sequential channel-then-spatial gates: CBAM and GAM."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Attention, floor_div_rule, mechanism
from ._registry import HParam, divisors


@mechanism(
    name="cbam",
    title="Convolutional Block Attention Module",
    arxiv="1807.06521",
    reference="ECCV 2018; official code Jongchan/attention-module (MODELS/cbam.py)",
    placement="residual",
    placement_note="after bn3/bn2, before the addition",
    hparams=(
        HParam("reduction", "r", 16, int, "reduction ratio of the shared channel MLP", low=1),
        HParam("kernel_size", "k", 7, int, "kernel of the spatial gate's convolution", low=1, high=15, odd=True),
    ),
    rule=floor_div_rule("reduction"),
)
class CBAM(Attention):
    """Channel gate sigmoid(MLP(avgpool) + MLP(maxpool)) with a shared MLP whose Linear layers have
    biases, then spatial gate sigmoid(BN(conv_k([max_c; mean_c]))) with a bias-free conv, BN
    (momentum 0.01) and the BN weight initialised to 0 - the official code's choices."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction, kernel_size=kernel_size)
        dd = dict(device=device, dtype=dtype)
        hidden = channels // self.hparams["reduction"]
        k = self.hparams["kernel_size"]
        self.fc1 = nn.Linear(channels, hidden, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, **dd)
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, **dd)
        nn.init.zeros_(self.bn.weight)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 0)  # one MLP pass for both pools
        logits = self.fc2(self.act(self.fc1(pooled)))
        return (logits[:b] + logits[b:]).sigmoid()

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return self.bn(self.spatial(pooled)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)[:, :, None, None]
        return x * self.spatial_gate(x)


def _gam_rule(channels: int, hp: dict) -> list[tuple[str, str]]:
    errors = floor_div_rule("reduction")(channels, hp)
    if errors:
        return errors
    g, hidden = hp["groups"], channels // hp["reduction"]
    if channels % g or hidden % g:
        ok = [d for d in divisors(channels) if hidden % d == 0]
        errors.append(
            ("groups", f"must divide both channels ({channels}) and channels // reduction ({hidden}); valid here: {ok}")
        )
    return errors


@mechanism(
    name="gam",
    title="Global Attention Mechanism",
    arxiv="2112.05561",
    reference="no official code released; follows the paper's equations",
    placement="residual",
    placement_note="the paper gives no code; used like CBAM, on the residual branch before the addition",
    hparams=(
        HParam("reduction", "r", 4, int, "reduction ratio of the channel MLP and of the spatial convolutions", low=1),
        HParam(
            "groups",
            "g",
            1,
            int,
            "groups of the two 7x7 convolutions (>1: grouped, with a channel "
            "shuffle between them, the paper's variant for ResNet-50)",
            low=1,
        ),
    ),
    rule=_gam_rule,
)
class GAM(Attention):
    """Channel gate: a per-position MLP C -> C/r -> C over the channel vector (no pooling), sigmoid.
    Spatial gate: 7x7 conv C -> C/r, BN, ReLU, [channel shuffle], 7x7 conv C/r -> C, BN, sigmoid.
    y = M_s(x') * x' with x' = M_c(x) * x. Layers keep their biases as the widely used port does."""

    def __init__(
        self,
        channels: int,
        reduction: int = 4,
        groups: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction, groups=groups)
        dd = dict(device=device, dtype=dtype)
        hidden = channels // self.hparams["reduction"]
        g = self.groups = self.hparams["groups"]
        self.fc1 = nn.Linear(channels, hidden, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, **dd)
        self.conv1 = nn.Conv2d(channels, hidden, 7, padding=3, groups=g, **dd)
        self.bn1 = nn.BatchNorm2d(hidden, **dd)
        self.conv2 = nn.Conv2d(hidden, channels, 7, padding=3, groups=g, **dd)
        self.bn2 = nn.BatchNorm2d(channels, **dd)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(0, 2, 3, 1)
        return self.fc2(self.act(self.fc1(t))).permute(0, 3, 1, 2).sigmoid()

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        t = self.act(self.bn1(self.conv1(x)))
        if self.groups > 1:
            b, c, h, w = t.shape
            t = t.reshape(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.bn2(self.conv2(t)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)
