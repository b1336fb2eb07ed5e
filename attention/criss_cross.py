"""Criss-Cross Attention (CCNet)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Attention, floor_div_rule, mechanism
from ._registry import HParam


@mechanism(
    name="cca",
    aliases=("crisscross", "criss_cross"),
    title="Criss-Cross Attention (CCNet)",
    arxiv="1811.11721",
    reference="ICCV 2019 / TPAMI; official code speedinghzl/CCNet (cc_attention)",
    placement="stage_output",
    placement_note="RCCA head after the (dilated) backbone, applied R=2 times with shared weights; "
    "not a per-block module in the paper",
    hparams=(
        HParam("reduction", "r", 8, int, "query/key width = channels // r (official 8)", low=1),
        HParam(
            "recurrence",
            "R",
            2,
            int,
            "times the module is applied with shared weights (R=2 reaches every pixel)",
            low=1,
            high=4,
        ),
    ),
    rule=floor_div_rule("reduction", "query/key width"),
)
class CrissCrossAttention(Attention):
    """For every pixel u, softmax over the H + W - 1 positions of its row and column of q_u . k_i,
    then y_u = gamma * sum_i A_i v_i + x_u, repeated R times with shared weights. gamma starts at 0.

    The duplicated centre pixel is masked in the column part; the mask is built on the input's
    device, so the module runs wherever its input lives."""

    def __init__(
        self,
        channels: int,
        reduction: int = 8,
        recurrence: int = 2,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction, recurrence=recurrence)
        dd = dict(device=device, dtype=dtype)
        qk = channels // self.hparams["reduction"]
        self.query = nn.Conv2d(channels, qk, 1, **dd)
        self.key = nn.Conv2d(channels, qk, 1, **dd)
        self.value = nn.Conv2d(channels, channels, 1, **dd)
        self.gamma = nn.Parameter(torch.zeros(1, **dd))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, H, W, H + W): first H entries over the column, then W over the row."""
        h = x.shape[2]
        q, k = self.query(x), self.key(x)
        e_col = q.permute(0, 3, 2, 1) @ k.permute(0, 3, 1, 2)  # (B, W, H, H): [w, i, j] = q(i,w).k(j,w)
        e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool, device=x.device), float("-inf"))
        e_row = q.permute(0, 2, 3, 1) @ k.permute(0, 2, 1, 3)  # (B, H, W, W): [i, w, j] = q(i,w).k(i,j)
        return torch.cat([e_col.permute(0, 2, 1, 3), e_row], 3).softmax(3)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        a = self.attention(x)
        v = self.value(x)
        a_col, a_row = a[..., :h], a[..., h:]
        out_col = a_col.permute(0, 2, 1, 3) @ v.permute(0, 3, 2, 1)  # (B, W, H, C)
        out_row = a_row @ v.permute(0, 2, 3, 1)  # (B, H, W, C)
        out = out_col.permute(0, 3, 2, 1) + out_row.permute(0, 3, 1, 2)
        return self.gamma * out.to(x.dtype) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.hparams["recurrence"]):
            x = self.step(x)
        return x
