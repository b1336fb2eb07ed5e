"""S2-MLPv2 split attention with spatial shifts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Attention, mechanism


def shift(t: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Shift ``t`` by one position along ``dim`` out of place; the border row/column keeps its value.

    step=+1: out[i] = t[i-1] (out[0] = t[0]); step=-1: out[i] = t[i+1] (out[-1] = t[-1]).
    """
    n = t.shape[dim]
    if step > 0:
        return torch.cat([t.narrow(dim, 0, 1), t.narrow(dim, 0, n - 1)], dim)
    return torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim)


def spatial_shift(t: torch.Tensor, first_dim: int) -> torch.Tensor:
    """S2-MLP spatial shift of a channels-last tensor (B, H, W, C): the four channel quarters move
    +1 and -1 along ``first_dim``, then +1 and -1 along the other spatial axis."""
    c = t.shape[-1]
    bounds = [0, c // 4, c // 2, (3 * c) // 4, c]
    other = 2 if first_dim == 1 else 1
    moves = [(first_dim, 1), (first_dim, -1), (other, 1), (other, -1)]
    parts = [shift(t[..., bounds[i] : bounds[i + 1]], d, s) for i, (d, s) in enumerate(moves)]
    return torch.cat(parts, -1)


@mechanism(
    name="s2",
    aliases=("s2attention", "split", "s2mlpv2"),
    title="S2-MLPv2 split attention with spatial shifts",
    arxiv="2108.01072",
    reference="no official code; the paper's S2-MLPv2 block (split attention over three shifted branches)",
    placement="residual",
    placement_note="the paper uses it inside the S2-MLPv2 MLP block; in CNNs it is used in the residual slot",
    hparams=(),
    min_channels=4,
)
class S2Attention(Attention):
    """x -> Linear C->3C; branch 1 shifted (H then W), branch 2 shifted (W then H), branch 3 as is;
    split attention a = sum over branches and pixels, weights = softmax over the 3 branches of
    W2 GELU(W1 a) (no biases), sum of weighted branches, Linear C->C. 8C^2 + 4C parameters.
    All shifts are out of place, so they are exact under autograd and torch.compile."""

    def __init__(self, channels: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(channels)
        dd = dict(device=device, dtype=dtype)
        self.mlp1 = nn.Linear(channels, 3 * channels, **dd)
        self.fc1 = nn.Linear(channels, channels, bias=False, **dd)
        self.fc2 = nn.Linear(channels, 3 * channels, bias=False, **dd)
        self.mlp2 = nn.Linear(channels, channels, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x1, x2, x3 = self.mlp1(x.permute(0, 2, 3, 1)).chunk(3, -1)
        x1, x2 = spatial_shift(x1, 1), spatial_shift(x2, 2)
        a = (x1 + x2 + x3).sum((1, 2))
        w = self.fc2(F.gelu(self.fc1(a))).reshape(b, 3, c).softmax(1)[:, :, None, None, :]
        out = x1 * w[:, 0] + x2 * w[:, 1] + x3 * w[:, 2]
        return self.mlp2(out).permute(0, 3, 1, 2)
