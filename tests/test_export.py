"""ONNX export (checked with onnxruntime) and torch.compile for all twelve mechanisms."""

import logging
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from _helpers import NAMES, SMALL_C, randomize, small

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_pytorch_in_onnxruntime(name, tmp_path):
    m = randomize(small(name), scale=0.2).eval()
    x = torch.randn(2, SMALL_C, 9, 7)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(m, (x,), str(path), dynamo=True, opset_version=18)
        finally:
            logging.disable(logging.NOTSET)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


# Every mechanism traced whole (fullgraph: no graph break) through Dynamo and AOTAutograd; Inductor's
# code generation (cold, 50-65 s for CBAM or GAM on 2 cores) for one of them.
@pytest.mark.parametrize("name, backend", [(n, "aot_eager") for n in NAMES] + [("se", "inductor")])
def test_torch_compile_matches_eager_forward_and_backward(name, backend):
    m = randomize(small(name), scale=0.2).train()
    compiled = torch.compile(m, fullgraph=True, backend=backend)
    x = torch.randn(2, SMALL_C, 9, 7, requires_grad=True)
    # BatchNorm running statistics move in training mode: compare gradients on a copy of the state.
    state = {k: v.clone() for k, v in m.state_dict().items()}
    y = compiled(x)
    y.sum().backward()
    grad_compiled = x.grad.clone()
    m.load_state_dict(state)
    x.grad = None
    ref = m(x)
    ref.sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_compiled, x.grad, rtol=1e-4, atol=1e-4)
