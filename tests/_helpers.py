"""Shared test helpers."""

import torch

import attention

# Hyperparameters that make every mechanism valid (and well-conditioned) at the small channel counts the tests use
# (the official defaults need more channels: ShuffleAttention groups=64 needs C % 128 == 0,
# Selective Kernel groups=32 needs C % 32 == 0).
SMALL_C = 32
SMALL_HP = {"sa": {"groups": 4}, "sk": {"groups": 8},
            # 8 hidden units instead of 2, so random weights cannot leave every ReLU unit dead
            "se": {"reduction": 4}, "cbam": {"reduction": 4}, "soca": {"reduction": 4}}
NAMES = list(attention.MECHANISMS)


def small(name: str, channels: int = SMALL_C, **kw) -> torch.nn.Module:
    return attention.create(name, channels, **{**SMALL_HP.get(name, {}), **kw})


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Random values for every parameter and BN running statistic, so no gate is at an identity or
    zero initialisation (CBAM's spatial BN weight, SA's weights and CCA's gamma start at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen, dtype=torch.float64).to(b.dtype) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen, dtype=torch.float64).to(b.dtype) * 0.1)
    return module

