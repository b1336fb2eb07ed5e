"""Channel gates computed from global statistics: SE, ECA and SOCA."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._base import Attention, floor_div_rule, fp32, mechanism
from ._registry import HParam

_REDUCTION_DOC = "channel reduction ratio r of the bottleneck MLP; hidden width = channels // r"


@mechanism(
    name="se",
    title="Squeeze-and-Excitation",
    arxiv="1709.01507",
    reference="CVPR 2018; official code hujie-frank/SENet (Caffe)",
    placement="residual",
    placement_note="after the last BN of the residual branch, before the addition",
    hparams=(HParam("reduction", "r", 16, int, _REDUCTION_DOC, low=1),),
    rule=floor_div_rule("reduction"),
)
class SE(Attention):
    """s = sigmoid(W2 relu(W1 GAP(x))), y = s * x. Both FCs have biases (as the official 1x1 convs);
    hidden width is channels // r (exact C/r wherever r divides C, as in every official model)."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction)
        hidden = channels // self.hparams["reduction"]
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(channels, hidden, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, **dd)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights, shape (B, C)."""
        return self.fc2(self.act(self.fc1(x.mean((2, 3))))).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA's adaptive kernel size k = |log2(C)/gamma + beta/gamma|_odd (the paper's rule, gamma=2, b=1).

    ``|t|_odd`` is implemented as in the paper's reference formula: truncate, then bump an even value to
    the next odd one. ``math.log2`` is exact for powers of two (``math.log(C, 2)`` is not always).
    """
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


@mechanism(
    name="eca",
    title="Efficient Channel Attention",
    arxiv="1910.03151",
    reference="CVPR 2020; official code BangguWu/ECANet",
    placement="residual",
    placement_note="after bn3/bn2, before the addition (MobileNetV2: after the final pw-linear BN)",
    hparams=(
        HParam(
            "k_size",
            "k",
            "auto",
            int,
            "kernel of the 1D convolution across channels; 'auto' = the paper's "
            "|log2(C)/2 + 1/2|_odd (the official code takes k per stage, e.g. 3,5,5,7 for ResNet-50)",
            low=1,
            high=31,
            odd=True,
            extra=("auto",),
        ),
    ),
)
class ECA(Attention):
    """w = sigmoid(conv1d_k(GAP(x))) across channels, no bias (official eca_layer); y = w * x."""

    def __init__(
        self,
        channels: int,
        k_size: int | str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, k_size=k_size)
        k = self.hparams["k_size"]
        self.kernel_size = eca_kernel_size(channels) if k == "auto" else k
        self.conv = nn.Conv1d(
            1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False, device=device, dtype=dtype
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


@mechanism(
    name="soca",
    title="Second-order Channel Attention (SAN)",
    arxiv=None,
    reference="Dai et al., CVPR 2019 'Second-order Attention Network for Single Image Super-Resolution'; "
    "official code daitao/SAN (SOCA, MPNCOV)",
    placement="stage_output",
    placement_note="end of each residual group (LSRAG) of the SR network, i.e. after a group of blocks",
    hparams=(
        HParam("reduction", "r", 16, int, _REDUCTION_DOC + " (SAN passes 16; SOCA's own default is 8)", low=1),
        HParam("iterations", "n", 5, int, "Newton-Schulz iterations of the matrix square root", low=1, high=20),
    ),
    rule=floor_div_rule("reduction"),
)
class SOCA(Attention):
    """Covariance pooling (divide by M = H*W), trace pre-normalisation, Newton-Schulz square root,
    sqrt(trace) post-compensation, row mean, then an SE-style gate with biases.

    Batched throughout: the covariance is formed as Xc Xc^T / M from centred features, so memory is
    O(C^2) per sample (no M x M centring matrix), no Python loop runs over the batch, autograd goes
    through ordinary batched matmuls, and the statistics are computed in float32 under autocast.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        iterations: int = 5,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction, iterations=iterations)
        hidden = channels // self.hparams["reduction"]
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(channels, hidden, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, **dd)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Row means of the normalised covariance square root, shape (B, C), float32."""
        b, c, h, w = x.shape
        with fp32(x):
            feats = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).reshape(b, c, h * w)
            feats = feats - feats.mean(2, keepdim=True)
            cov = feats @ feats.transpose(1, 2) / (h * w)
            trace = cov.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-12)[:, None, None]
            y = cov / trace
            eye3 = 3.0 * torch.eye(c, device=x.device, dtype=y.dtype)
            z = None
            for i in range(self.hparams["iterations"]):
                t = 0.5 * (eye3 - (y if z is None else z @ y))
                if i < self.hparams["iterations"] - 1:
                    z = t if z is None else t @ z
                y = y @ t
            return (y * trace.sqrt()).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pooled(x).to(x.dtype)
        s = self.fc2(self.act(self.fc1(s))).sigmoid()
        return x * s[:, :, None, None]
