"""ShuffleAttention (SA-Net)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Attention, mechanism
from ._registry import HParam, divisors


def _sa_rule(channels: int, hp: dict) -> list[tuple[str, str]]:
    g = hp["groups"]
    if channels % (2 * g):
        ok = [d for d in divisors(channels) if channels % (2 * d) == 0]
        return [
            (
                "groups",
                f"channels must be divisible by 2 * groups (each group is split into a channel "
                f"half and a spatial half); valid groups at {channels} channels: {ok}",
            )
        ]
    return []


@mechanism(
    name="sa",
    aliases=("shuffle", "shuffleattention"),
    title="Shuffle Attention (SA-Net)",
    arxiv="2102.00240",
    reference="ICASSP 2021; official code wofmanaf/SA-Net (models/sa_resnet.py, sa_layer)",
    placement="residual",
    placement_note="after bn3, before the addition (SABottleneck)",
    hparams=(
        HParam("groups", "g", 64, int, "number of groups G; needs channels % (2 G) == 0 (official default 64)", low=1),
    ),
    rule=_sa_rule,
)
class ShuffleAttention(Attention):
    """Per group: channel half x * sigmoid(w1 * GAP(x) + b1), spatial half
    x * sigmoid(w2 * GN(x) + b2) with a per-channel GroupNorm; concatenate, channel-shuffle with 2
    groups. Initialised as the official code (w = 0, b = 1); 3C/G parameters."""

    def __init__(
        self,
        channels: int,
        groups: int = 64,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, groups=groups)
        self.groups = self.hparams["groups"]
        half = channels // (2 * self.groups)
        dd = dict(device=device, dtype=dtype)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1, **dd))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1, **dd))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1, **dd))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1, **dd))
        self.gn = nn.GroupNorm(half, half, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.reshape(b * self.groups, c // self.groups, h, w)
        x_c, x_s = t.chunk(2, dim=1)
        x_c = x_c * (self.cweight * x_c.mean((2, 3), keepdim=True) + self.cbias).sigmoid()
        x_s = x_s * (self.sweight * self.gn(x_s) + self.sbias).sigmoid()
        out = torch.cat([x_c, x_s], 1).reshape(b, 2, c // 2, h, w)
        return out.transpose(1, 2).reshape(b, c, h, w)
