"""SimAM: parameter-free attention from an energy function."""

from __future__ import annotations

import torch

from ._base import Attention, fp32, mechanism
from ._registry import HParam


@mechanism(
    name="simam",
    title="SimAM (simple, parameter-free attention)",
    arxiv=None,
    reference="Yang et al., ICML 2021, PMLR 139:11863-11874; official code ZjjConan/SimAM",
    placement="post_conv3x3",
    placement_note="official ResNets wrap conv2: after the 3x3 conv, before bn2; MobileNetV2: after the "
    "depthwise conv, before its BN",
    hparams=(
        HParam("e_lambda", "lam", 1e-4, float, "regulariser lambda of the energy function", low=1e-12, high=10.0),
    ),
)
class SimAM(Attention):
    """y = x * sigmoid(d / (4 (sum(d) / n + lambda)) + 1/2), d = (x - mean_hw x)^2, n = H*W - 1
    (the unbiased variance the authors intend). For 1x1 maps n is clamped to 1, so the output stays
    finite (d = 0 there, and the gate is sigmoid(1/2)). Half-precision inputs are reduced in float32."""

    def __init__(
        self,
        channels: int,
        e_lambda: float = 1e-4,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, e_lambda=e_lambda)
        self.e_lambda = self.hparams["e_lambda"]

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        with fp32(x):
            xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            d = (xf - xf.mean((2, 3), keepdim=True)).square()
            return (d / (4 * (d.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5).sigmoid().to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
