"""``nas export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas.cli.base import app
from nas.cli.console import console, shown
from nas.cli.options import Artifacts, Force, Storage, Study

Opt = typer.Option
Which = Annotated[str, typer.Argument(help="best, or a trial number")]
MaxLatency = Annotated[float | None, Opt(help="best: the most accurate front member within this latency")]
MinAccuracy = Annotated[float | None, Opt(help="best: the fastest front member reaching this accuracy")]
Out = Annotated[Path | None, Opt(help="Folder to write (default: runs/<study>/export/trial_<n>)")]
Onnx = Annotated[bool, Opt("--onnx", help="Also write model.onnx, checked in onnxruntime")]
TorchScript = Annotated[bool, Opt("--torchscript", help="Also write model.torchscript.pt, checked")]
Weights = Annotated[bool, Opt("--weights/--no-weights", help="Copy the trial's trained weights")]
Name = Annotated[str | None, Opt(help="timm model name to register (default: nas_<study>_t<trial>)")]


@app.command("export")
def export_cmd(
    which: Which,
    study: Study = None,
    storage: Storage = None,
    artifacts: Artifacts = None,
    max_latency_ms: MaxLatency = None,
    min_accuracy: MinAccuracy = None,
    out: Out = None,
    onnx: Onnx = False,
    torchscript: TorchScript = False,
    weights: Weights = True,
    name: Name = None,
    force: Force = False,
) -> None:
    """Write a trial as a folder: model.py (timm + attention only), architecture.yaml, metrics.json and
    the trained weights (safetensors); optionally ONNX and TorchScript."""
    from nas import export

    chosen = export.choose(which, study, storage, out, max_latency_ms, min_accuracy)
    console.print(shown(chosen.line))
    result = export.export_chosen(
        chosen, force=force, weights=weights, onnx=onnx, torchscript=torchscript, name=name, artifacts=artifacts
    )
    console.print(shown(chosen.search_run))
    for what, diff in result.checks.items():
        console.print(f"checked {what} against PyTorch: largest difference {diff:.2e}")
    console.print(f"written: {shown(', '.join(str(f) for f in result.files))}")
