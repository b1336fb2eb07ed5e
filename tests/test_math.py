"""Each mechanism's forward pass against an independent computation of the paper's formula.

The oracles below are written directly from the equations, with explicit loops or ``einsum`` over the
module's own parameter tensors, in float64 numpy. They never call a module's helper methods. Every
module is re-initialised with random parameters (and random BatchNorm running statistics, BN in eval
mode), so zero-initialised parameters (CBAM's spatial BN weight, ShuffleAttention's weights, the
criss-cross gamma) cannot make a check pass trivially.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attention
from attention.s2 import shift, spatial_shift

ATOL = 1e-10
RTOL = 1e-9


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def build(name: str, channels: int, **hparams) -> nn.Module:
    """A float64 module in eval mode with every parameter ~ 0.5 N(0, 1) and random BN statistics."""
    m = attention.create(name, channels, **hparams).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.randn_like(mod.running_mean) * 0.5)
                mod.running_var.copy_(torch.rand_like(mod.running_var) + 0.5)
    for p in m.parameters():
        assert p.abs().min() > 0, "a parameter stayed zero"
    return m


def rand_input(b: int, c: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(b, c, h, w, dtype=torch.float64)


def run(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x.clone()).numpy()


def npy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()


def check(
    got: np.ndarray,
    expected: np.ndarray,
    x: torch.Tensor | np.ndarray | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> None:
    """``got`` equals the oracle, and (when ``x`` is given) the mechanism actually changed its input."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    if x is not None:
        x = x.numpy() if isinstance(x, torch.Tensor) else x
        assert np.abs(got - x).max() > 1e-3, "output equals input: the check would be trivial"


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def relu(v):
    return np.maximum(v, 0.0)


def softmax(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def hardswish(v):
    return v * np.minimum(np.maximum(v + 3.0, 0.0), 6.0) / 6.0


def gelu(v):
    """Exact (erf) GELU: 0.5 v (1 + erf(v / sqrt 2))."""
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def bn_eval(v: np.ndarray, bn: nn.Module, axis: int = 1) -> np.ndarray:
    """Eval-mode BatchNorm: (v - running_mean) / sqrt(running_var + eps) * weight + bias along ``axis``."""
    shape = [1] * v.ndim
    shape[axis] = -1
    rm, rv = npy(bn.running_mean).reshape(shape), npy(bn.running_var).reshape(shape)
    w, b = npy(bn.weight).reshape(shape), npy(bn.bias).reshape(shape)
    return (v - rm) / np.sqrt(rv + bn.eps) * w + b


def linear(v: np.ndarray, layer: nn.Linear) -> np.ndarray:
    """y_o = sum_i W[o, i] v_i (+ b_o) over the last axis."""
    out = np.einsum("...i,oi->...o", v, npy(layer.weight))
    return out + npy(layer.bias) if layer.bias is not None else out


def conv1x1(v: np.ndarray, conv: nn.Conv2d) -> np.ndarray:
    """A 1x1 convolution of (B, Cin, ...) as a matrix multiply per position, with bias."""
    w = npy(conv.weight)[:, :, 0, 0]
    out = np.einsum("oi,bi...->bo...", w, v)
    return out + npy(conv.bias).reshape((1, -1) + (1,) * (v.ndim - 2))


def conv2d_oracle(v: np.ndarray, conv: nn.Conv2d, **kw) -> np.ndarray:
    """A full k x k convolution through ``F.conv2d`` (an independent library op) with the module's weights."""
    bias = None if conv.bias is None else conv.bias.detach()
    return F.conv2d(torch.from_numpy(v), conv.weight.detach(), bias, **kw).numpy()


# ----------------------------------------------------------------------------------------------
# SE, ECA, SOCA
# ----------------------------------------------------------------------------------------------


def test_se():
    """SE: s = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2), y = s * x."""
    m = build("se", 16, reduction=4)
    x = rand_input(2, 16, 3, 5)
    xn = x.numpy()
    z = xn.mean(axis=(2, 3))
    s = sigmoid(linear(relu(linear(z, m.fc1)), m.fc2))
    check(run(m, x), s[:, :, None, None] * xn, x)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_eca(k):
    """ECA: y = sigmoid(conv1d_k(mean_hw(x))) * x, zero padding (k-1)/2, no bias, cross-correlation."""
    m = build("eca", 12, k_size=k)
    assert m.kernel_size == k
    x = rand_input(2, 12, 4, 4)
    xn = x.numpy()
    w = npy(m.conv.weight).reshape(k)
    pad = (k - 1) // 2
    z = xn.mean(axis=(2, 3))
    conv = np.zeros_like(z)
    for b in range(2):
        for c in range(12):
            for j in range(k):
                src = c + j - pad
                if 0 <= src < 12:
                    conv[b, c] += w[j] * z[b, src]
    check(run(m, x), sigmoid(conv)[:, :, None, None] * xn, x)


def test_eca_kernel_size_rule():
    """ECA's k = |(log2 C + 1) / 2|_odd: truncate, then bump an even value to the next odd one."""
    channels = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    expected = [1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7]
    assert [attention.eca_kernel_size(c) for c in channels] == expected
    assert attention.create("eca", 256).kernel_size == 5
    assert attention.create("eca", 256).conv.kernel_size == (5,)


def newton_schulz(a: np.ndarray, n: int) -> np.ndarray:
    """Y0 = A, Z0 = I; T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z; returns Y_N (-> A^(1/2))."""
    c = a.shape[0]
    y, z = a.copy(), np.eye(c)
    for _ in range(n):
        t = 0.5 * (3.0 * np.eye(c) - z @ y)
        y, z = y @ t, t @ z
    return y


def soca_oracle(m: nn.Module, xn: np.ndarray, n: int | None, use_eigh: bool = False) -> np.ndarray:
    """SOCA: covariance / trace, NS square root (or an exact eigen square root), * sqrt(trace),
    mean over rows, SE-style gate with biases."""
    bsz, c, h, w = xn.shape
    pooled = np.zeros((bsz, c))
    for b in range(bsz):
        feats = xn[b].reshape(c, h * w)
        centred = feats - feats.mean(axis=1, keepdims=True)
        sigma = centred @ centred.T / (h * w)
        np.testing.assert_allclose(sigma, np.cov(feats, bias=True), rtol=1e-12, atol=1e-12)
        tr = np.trace(sigma)
        if use_eigh:
            vals, vecs = np.linalg.eigh(sigma)
            root = vecs @ np.diag(np.sqrt(vals)) @ vecs.T
        else:
            root = math.sqrt(tr) * newton_schulz(sigma / tr, n)
        pooled[b] = root.mean(axis=0)  # z_j = mean over rows i
    gate = sigmoid(linear(relu(linear(pooled, m.fc1)), m.fc2))
    return gate[:, :, None, None] * xn


@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_soca(iterations):
    """SOCA: Sigma = Xc Xc^T / M, A = Sigma / tr, Newton-Schulz Y_N, pooled z_j = mean_i sqrt(tr) Y_N[i, j],
    y = sigmoid(fc2 relu(fc1 z)) x; float64 in, float64 statistics (tight tolerance)."""
    m = build("soca", 8, reduction=2, iterations=iterations)
    x = rand_input(2, 8, 3, 5)
    check(run(m, x), soca_oracle(m, x.numpy(), iterations), x)


def test_soca_newton_schulz_converges_to_sqrt():
    """With enough iterations on a well-conditioned covariance, sqrt(tr) Y_N is Sigma^(1/2)
    (eigendecomposition square root), and the module's output matches the exact-root oracle."""
    x = rand_input(2, 4, 16, 16)
    xn = x.numpy()
    feats = xn[0].reshape(4, -1)
    sigma = np.cov(feats, bias=True)
    vals, vecs = np.linalg.eigh(sigma)
    assert vals.min() / vals.max() > 0.2  # well conditioned
    root = vecs @ np.diag(np.sqrt(vals)) @ vecs.T
    tr = np.trace(sigma)
    y = newton_schulz(sigma / tr, 20)
    np.testing.assert_allclose(y @ y, sigma / tr, atol=1e-12)
    np.testing.assert_allclose(math.sqrt(tr) * y, root, atol=1e-10)
    m = build("soca", 4, reduction=2, iterations=20)
    check(run(m, x), soca_oracle(m, xn, None, use_eigh=True), x, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# CBAM, GAM
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 7])
def test_cbam(k):
    """CBAM: Mc = sigmoid(MLP(avg) + MLP(max)); x1 = Mc x; Ms = sigmoid(BN(conv_k([max_c x1; mean_c x1])));
    y = Ms x1 (max map first, bias-free conv, zero padding k // 2, BN with running stats)."""
    m = build("cbam", 16, reduction=4, kernel_size=k)
    x = rand_input(2, 16, 3, 5)
    xn = x.numpy()
    bsz, c, h, w = xn.shape

    def mlp(v):
        return linear(relu(linear(v, m.fc1)), m.fc2)

    mc = sigmoid(mlp(xn.mean(axis=(2, 3))) + mlp(xn.max(axis=(2, 3))))
    x1 = mc[:, :, None, None] * xn

    maps = np.stack([x1.max(axis=1), x1.mean(axis=1)], axis=1)  # (B, 2, H, W): max FIRST
    weight = npy(m.spatial.weight)  # (1, 2, k, k)
    pad = k // 2
    conv = np.zeros((bsz, 1, h, w))
    for b in range(bsz):
        for i in range(h):
            for j in range(w):
                acc = 0.0
                for ch in range(2):
                    for u in range(k):
                        for v in range(k):
                            ii, jj = i + u - pad, j + v - pad
                            if 0 <= ii < h and 0 <= jj < w:
                                acc += weight[0, ch, u, v] * maps[b, ch, ii, jj]
                conv[b, 0, i, j] = acc
    ms = sigmoid(bn_eval(conv, m.bn))
    check(run(m, x), ms * x1, x)


@pytest.mark.parametrize("groups", [1, 2])
def test_gam(groups):
    """GAM: Mc = sigmoid(MLP of each pixel's channel vector); x1 = Mc x; t = relu(bn1(conv1 x1)),
    channel shuffle when grouped; Ms = sigmoid(bn2(conv2 t)); y = Ms x1."""
    m = build("gam", 16, reduction=4, groups=groups)
    x = rand_input(2, 16, 4, 4)
    xn = x.numpy()
    bsz, c, h, w = xn.shape

    mc = np.zeros_like(xn)
    for b in range(bsz):
        for i in range(h):
            for j in range(w):
                mc[b, :, i, j] = sigmoid(linear(relu(linear(xn[b, :, i, j], m.fc1)), m.fc2))
    x1 = mc * xn

    t = relu(bn_eval(conv2d_oracle(x1, m.conv1, padding=3, groups=groups), m.bn1))
    if groups > 1:
        hidden = t.shape[1]
        per = hidden // groups
        shuffled = np.empty_like(t)
        for o in range(hidden):  # reshape (B, g, C'/g) -> transpose: out o = j * g + i takes i * C'/g + j
            i, j = o % groups, o // groups
            shuffled[:, o] = t[:, i * per + j]
        t = shuffled
    ms = sigmoid(bn_eval(conv2d_oracle(t, m.conv2, padding=3, groups=groups), m.bn2))
    check(run(m, x), ms * x1, x)


# ----------------------------------------------------------------------------------------------
# Coordinate attention, SimAM, NAM
# ----------------------------------------------------------------------------------------------


def test_coord_att():
    """CoordAtt: z_h = mean_w x, z_w = mean_h x; f = hardswish(BN(W1 [z_h, z_w] + b1)) per position;
    g_h = sigmoid(conv_h f_h), g_w = sigmoid(conv_w f_w); y[b,c,i,j] = x g_h[b,c,i] g_w[b,c,j]."""
    m = build("ca", 16, reduction=2)
    x = rand_input(2, 16, 3, 5)
    xn = x.numpy()
    bsz, c, h, w = xn.shape
    z = np.concatenate([xn.mean(axis=3), xn.mean(axis=2)], axis=2)  # (B, C, H + W)
    w1, b1 = npy(m.conv1.weight)[:, :, 0, 0], npy(m.conv1.bias)
    f = np.zeros((bsz, w1.shape[0], h + w))
    for b in range(bsz):
        for p in range(h + w):
            f[b, :, p] = w1 @ z[b, :, p] + b1
    f = hardswish(bn_eval(f, m.bn1))
    g_h = sigmoid(conv1x1(f[:, :, :h], m.conv_h))  # (B, C, H)
    g_w = sigmoid(conv1x1(f[:, :, h:], m.conv_w))  # (B, C, W)
    expected = np.zeros_like(xn)
    for b in range(bsz):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    expected[b, ch, i, j] = xn[b, ch, i, j] * g_h[b, ch, i] * g_w[b, ch, j]
    check(run(m, x), expected, x)


def test_simam():
    """SimAM: y = x sigmoid(d / (4 (sum(d) / n + lambda)) + 1/2), d = (x - mu)^2, n = HW - 1; a 1x1 map
    gives a finite x sigmoid(1/2)."""
    lam = 0.05
    m = attention.create("simam", 8, e_lambda=lam).double()
    x = rand_input(2, 8, 3, 5)
    xn = x.numpy()
    expected = np.zeros_like(xn)
    n = 3 * 5 - 1
    for b in range(2):
        for c in range(8):
            mu = xn[b, c].mean()
            d = (xn[b, c] - mu) ** 2
            v = d.sum() / n
            expected[b, c] = xn[b, c] * sigmoid(d / (4 * (v + lam)) + 0.5)
    check(run(m, x), expected, x)

    x1 = rand_input(2, 8, 1, 1)
    y1 = run(m, x1)
    assert np.isfinite(y1).all()
    check(y1, x1.numpy() * sigmoid(0.5), x1)


def test_nam():
    """NAM: y = x sigmoid(w_c BN(x)_c), w_c = |gamma_c| / sum_j |gamma_j| (gamma = BN weight)."""
    m = build("nam", 8)
    x = rand_input(2, 8, 3, 5)
    xn = x.numpy()
    gamma = np.abs(npy(m.bn.weight))
    wc = gamma / gamma.sum()
    expected = xn * sigmoid(wc[None, :, None, None] * bn_eval(xn, m.bn))
    check(run(m, x), expected, x)


# ----------------------------------------------------------------------------------------------
# ShuffleAttention, Criss-Cross attention
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2])
def test_shuffle_attention(groups):
    """SA: per group, channel half xc sigmoid(cw mean_hw(xc) + cb), spatial half
    xs sigmoid(sw GN(xs) + sb) (per-channel GN, biased variance); concatenate, shuffle with 2 groups."""
    c = 16
    m = build("sa", c, groups=groups)
    x = rand_input(2, c, 3, 5)
    xn = x.numpy()
    bsz = xn.shape[0]
    per = c // groups
    half = per // 2
    cw, cb = npy(m.cweight).reshape(half), npy(m.cbias).reshape(half)
    sw, sb = npy(m.sweight).reshape(half), npy(m.sbias).reshape(half)
    gw, gb = npy(m.gn.weight), npy(m.gn.bias)

    mixed = np.zeros_like(xn)  # after the two branches, before the shuffle
    for b in range(bsz):
        for g in range(groups):
            for k in range(per):
                ch = g * per + k
                v = xn[b, ch]
                if k < half:
                    mixed[b, ch] = v * sigmoid(cw[k] * v.mean() + cb[k])
                else:
                    q = k - half
                    norm = (v - v.mean()) / np.sqrt(v.var() + m.gn.eps) * gw[q] + gb[q]
                    mixed[b, ch] = v * sigmoid(sw[q] * norm + sb[q])

    expected = np.zeros_like(xn)
    for o in range(c):  # channel shuffle with 2 groups: out o = j * 2 + i takes channel i * C/2 + j
        i, j = o % 2, o // 2
        expected[:, o] = mixed[:, i * (c // 2) + j]
    check(run(m, x), expected, x)


def criss_cross_step(m: nn.Module, xn: np.ndarray) -> np.ndarray:
    """One criss-cross step: for pixel (i, j), softmax of q(i,j).k(p) over its column and row
    (the centre once, H + W - 1 positions), out = gamma sum_p A_p v(p) + x(i, j)."""
    bsz, c, h, w = xn.shape
    q, k, v = conv1x1(xn, m.query), conv1x1(xn, m.key), conv1x1(xn, m.value)
    gamma = float(m.gamma.item())
    out = np.zeros_like(xn)
    for b in range(bsz):
        for i in range(h):
            for j in range(w):
                positions = [(ii, j) for ii in range(h)] + [(i, jj) for jj in range(w) if jj != j]
                assert len(positions) == h + w - 1
                e = np.array([q[b, :, i, j] @ k[b, :, pi, pj] for pi, pj in positions])
                a = softmax(e, axis=0)
                agg = sum(a[n] * v[b, :, pi, pj] for n, (pi, pj) in enumerate(positions))
                out[b, :, i, j] = gamma * agg + xn[b, :, i, j]
    return out


@pytest.mark.parametrize("recurrence", [1, 2])
def test_criss_cross(recurrence):
    """CCA: y_u = gamma sum_{p in row(u) + column(u)} softmax(q_u . k_p) v_p + x_u, applied R times with
    shared weights."""
    m = build("cca", 8, reduction=2, recurrence=recurrence)
    x = rand_input(2, 8, 3, 5)
    expected = x.numpy()
    for _ in range(recurrence):
        expected = criss_cross_step(m, expected)
    check(run(m, x), expected, x)


# ----------------------------------------------------------------------------------------------
# S2-MLPv2 split attention
# ----------------------------------------------------------------------------------------------


def shift_oracle(t: np.ndarray, axis: int, step: int) -> np.ndarray:
    """Loop shift by one along ``axis`` (1 = H, 2 = W) of a (B, H, W, C) array; the border keeps its value."""
    out = t.copy()
    n = t.shape[axis]
    for i in range(n):
        src = i - step
        if not 0 <= src < n:  # border position: keeps its own value
            src = i
        if axis == 1:
            out[:, i] = t[:, src]
        else:
            out[:, :, i] = t[:, :, src]
    return out


def spatial_shift_oracle(t: np.ndarray, first_axis: int) -> np.ndarray:
    """Quarters [0, C//4), [C//4, C//2), [C//2, 3C//4), [3C//4, C) move +1, -1 along ``first_axis``,
    then +1, -1 along the other spatial axis."""
    c = t.shape[-1]
    bounds = [0, c // 4, c // 2, (3 * c) // 4, c]
    other = 2 if first_axis == 1 else 1
    moves = [(first_axis, 1), (first_axis, -1), (other, 1), (other, -1)]
    out = t.copy()
    for q, (axis, step) in enumerate(moves):
        sl = slice(bounds[q], bounds[q + 1])
        out[..., sl] = shift_oracle(t[..., sl], axis, step)
    return out


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("step", [1, -1])
def test_s2_shift(dim, step):
    """shift(t, dim, +1): out[i] = t[i-1], out[0] = t[0]; shift(t, dim, -1): out[i] = t[i+1],
    out[-1] = t[-1]; out of place, moves values by exactly one (no smearing)."""
    t = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    before = t.clone()
    out = shift(t, dim, step)
    assert torch.equal(t, before)
    n = t.shape[dim]
    tn, on = t.numpy(), out.numpy()
    for i in range(n):
        src = i - step if 0 <= i - step < n else i
        np.testing.assert_array_equal(np.take(on, i, axis=dim), np.take(tn, src, axis=dim))
    check(on, shift_oracle(tn, dim, step), tn)

    ramp = torch.arange(6, dtype=torch.float64)
    shape = [1, 1, 1, 1]
    shape[dim] = 6
    got = shift(ramp.reshape(shape).expand(1, 6, 6, 1).contiguous(), dim, step)
    line = np.take(got.numpy()[0, :, :, 0], 0, axis=2 - dim)
    expected = [0, 0, 1, 2, 3, 4] if step == 1 else [1, 2, 3, 4, 5, 5]
    np.testing.assert_array_equal(line, expected)


@pytest.mark.parametrize("c", [8, 6])
@pytest.mark.parametrize("first_dim", [1, 2])
def test_s2_spatial_shift(c, first_dim):
    """spatial_shift(t, 1): quarters +H, -H, +W, -W; spatial_shift(t, 2): +W, -W, +H, -H
    (quarter bounds [0, C//4, C//2, 3C//4, C]); out of place."""
    t = torch.randn(2, 4, 5, c, dtype=torch.float64)
    before = t.clone()
    out = spatial_shift(t, first_dim)
    assert torch.equal(t, before)
    check(out.numpy(), spatial_shift_oracle(t.numpy(), first_dim), t)

    # An arange along H in every channel: the quarters moving along H shift it by exactly one.
    ramp = torch.arange(4, dtype=torch.float64)[None, :, None, None].expand(1, 4, 5, c).contiguous()
    got = spatial_shift(ramp, first_dim).numpy()[0, :, 0, :]  # (H, C)
    bounds = [0, c // 4, c // 2, (3 * c) // 4, c]
    h_plus, h_minus = (0, 1) if first_dim == 1 else (2, 3)
    for ch in range(bounds[h_plus], bounds[h_plus + 1]):
        np.testing.assert_array_equal(got[:, ch], [0, 0, 1, 2])
    for ch in range(bounds[h_minus], bounds[h_minus + 1]):
        np.testing.assert_array_equal(got[:, ch], [1, 2, 3, 3])


@pytest.mark.parametrize("c", [8, 6])
def test_s2_attention(c):
    """S2: t = mlp1(x); x1 = shift_HW(t[:C]), x2 = shift_WH(t[C:2C]), x3 = t[2C:]; a = sum of branches
    over pixels; hat = softmax_3(fc2(gelu(fc1 a))); y = mlp2(sum_k hat_k x_k)."""
    m = build("s2", c)
    x = rand_input(2, c, 4, 5)
    xn = x.numpy()
    bsz = xn.shape[0]
    t = linear(xn.transpose(0, 2, 3, 1), m.mlp1)  # (B, H, W, 3C)
    x1 = spatial_shift_oracle(t[..., :c], 1)
    x2 = spatial_shift_oracle(t[..., c : 2 * c], 2)
    x3 = t[..., 2 * c :]
    a = (x1 + x2 + x3).sum(axis=(1, 2))  # (B, C)
    hat = softmax(linear(gelu(linear(a, m.fc1)), m.fc2).reshape(bsz, 3, c), axis=1)
    out = sum(hat[:, k, None, None, :] * xk for k, xk in enumerate((x1, x2, x3)))
    expected = linear(out, m.mlp2).transpose(0, 3, 1, 2)
    check(run(m, x), expected, x)


# ----------------------------------------------------------------------------------------------
# Selective Kernel
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("branches", [2, 3])
def test_selective_kernel(branches):
    """SK: U_m = relu(BN(grouped 3x3 conv, dilation m)); s = mean_hw(sum U_m); z = relu(bn(fc s));
    a = softmax over M of select(z) as (B, M, C); y = sum_m a_m U_m."""
    c, groups = 8, 2
    m = build("sk", c, reduction=2, min_hidden=3, groups=groups, branches=branches)
    x = rand_input(2, c, 5, 5)
    xn = x.numpy()
    bsz = xn.shape[0]
    feats = []
    for idx in range(branches):
        d = idx + 1
        conv, bn = m.paths[idx][0], m.paths[idx][1]
        u = conv2d_oracle(xn, conv, padding=d, dilation=d, groups=groups)
        feats.append(relu(bn_eval(u, bn)))
    s = sum(feats).mean(axis=(2, 3))
    z = relu(bn_eval(linear(s, m.fc), m.bn))
    a = softmax(linear(z, m.select).reshape(bsz, branches, c), axis=1)
    expected = sum(a[:, k, :, None, None] * feats[k] for k in range(branches))
    check(run(m, x), expected, x)


@pytest.mark.parametrize("c,r,low,d", [(64, 16, 32, 32), (64, 2, 4, 32), (8, 2, 3, 4), (256, 16, 8, 16)])
def test_selective_kernel_hidden_width(c, r, low, d):
    """SK fuse width d = max(C // r, L)."""
    m = attention.create("sk", c, reduction=r, min_hidden=low, groups=1)
    assert m.fc.out_features == d
    assert m.select.in_features == d
