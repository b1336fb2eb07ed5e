"""NAM: normalisation-based channel attention."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Attention, mechanism


@mechanism(
    name="nam",
    title="Normalization-based Attention Module (channel)",
    arxiv="2111.12419",
    reference="official code Christian-lyc/NAM (only the channel module was released)",
    placement="residual",
    placement_note="after bn3/bn2 (after CBAM if both), before the addition",
    hparams=(),
)
class NAM(Attention):
    """y = sigmoid(W_gamma * BN(x)) * x with W_gamma,i = |gamma_i| / sum_j |gamma_j| from the module's
    own BN scale factors.

    Convention: the weighting is part of the graph (the paper's formula, so gamma also learns through
    it; the official code detaches it via ``.data``), and uses |gamma| as the official code does, so a
    negative scale cannot flip or blow up the normalisation. ``sparsity_penalty()`` returns
    sum |gamma| for the paper's optional L1 term (add ``p * penalty`` to the loss)."""

    def __init__(self, channels: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(channels)
        self.bn = nn.BatchNorm2d(channels, device=device, dtype=dtype)

    def weights(self) -> torch.Tensor:
        g = self.bn.weight.abs()
        return g / g.sum().clamp_min(torch.finfo(g.dtype).tiny)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return (self.bn(x) * self.weights().to(x.dtype)[:, None, None]).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def sparsity_penalty(self) -> torch.Tensor:
        return self.bn.weight.abs().sum()
