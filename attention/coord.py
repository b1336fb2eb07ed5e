"""Coordinate Attention."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Attention, mechanism
from ._registry import HParam


@mechanism(
    name="ca",
    aliases=("coord", "coordatt", "coordinate"),
    title="Coordinate Attention",
    arxiv="2103.02907",
    reference="CVPR 2021; official code houqb/CoordAttention (coordatt.py, mbv2_ca.py)",
    placement="post_conv3x3_act",
    placement_note="MobileNetV2: after the depthwise 3x3 + BN + ReLU6, before the pw-linear 1x1 "
    "(on the hidden width); in ResNets it is commonly put in the residual slot",
    hparams=(HParam("reduction", "r", 32, int, "hidden width = max(8, channels // r) (official rule)", low=1),),
)
class CoordAtt(Attention):
    """Pool along W and along H separately, shared 1x1 conv (bias) + BN + h-swish on the
    concatenation, then two 1x1 convs (bias) give g_h (B,C,H,1) and g_w (B,C,1,W); y = x * g_h * g_w.
    Pooling is a mean over one axis, so any input size works and ONNX export needs no fixed sizes."""

    def __init__(
        self,
        channels: int,
        reduction: int = 32,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, reduction=reduction)
        dd = dict(device=device, dtype=dtype)
        hidden = max(8, channels // self.hparams["reduction"])
        self.conv1 = nn.Conv2d(channels, hidden, 1, **dd)
        self.bn1 = nn.BatchNorm2d(hidden, **dd)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(hidden, channels, 1, **dd)
        self.conv_w = nn.Conv2d(hidden, channels, 1, **dd)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[2], x.shape[3]
        pooled = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], 2)
        y = self.act(self.bn1(self.conv1(pooled)))
        y_h, y_w = torch.split(y, [h, w], 2)
        return self.conv_h(y_h).sigmoid(), self.conv_w(y_w.transpose(2, 3)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_h, g_w = self.gates(x)
        return x * g_h * g_w
