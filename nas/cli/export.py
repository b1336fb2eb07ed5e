"""``nas export``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli.base import app
from nas.cli.console import console, shown
from nas.core.errors import BadOption
from nas.core.names import check_out, folder_of


@app.command("export")
def export_cmd(
    which: str = typer.Argument(..., help="best, or a trial number"),
    study: str | None = typer.Option(None, help="Study name (default: the only study in the storage)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL (default: sqlite:///runs/<study>/study.db)"),
    artifacts: str | None = typer.Option(
        None, help="Artifact store of the study, where it is not where the study says (moved, mounted elsewhere)"
    ),
    max_latency_ms: float | None = typer.Option(None, help="best: the most accurate front member within this latency"),
    min_accuracy: float | None = typer.Option(None, help="best: the fastest front member reaching this accuracy"),
    out: Path | None = typer.Option(None, help="Folder to write (default: runs/<study>/export/trial_<n>)"),
    onnx: bool = typer.Option(False, "--onnx", help="Also write model.onnx, checked in onnxruntime"),
    torchscript: bool = typer.Option(False, "--torchscript", help="Also write model.torchscript.pt, checked"),
    weights: bool = typer.Option(True, "--weights/--no-weights", help="Copy the trial's trained weights"),
    name: str | None = typer.Option(None, help="timm model name to register (default: nas_<study>_t<trial>)"),
    force: bool = typer.Option(False, "--force", help="Write into a --out folder that already holds other files"),
) -> None:
    """Write a trial as a folder: model.py (timm + attention only), architecture.yaml, metrics.json and
    the trained weights (safetensors); optionally ONNX and TorchScript."""
    from nas import export
    from nas.study import studies as study_mod
    from nas.study.record import TrialInfo

    st = study_mod.open_existing(study, storage)
    exports = None if out else folder_of(Path("runs"), st.study_name) / "export"  # checked before any work
    if which == "best":
        trial, why = export.pick_best(st, max_latency_ms, min_accuracy)
        console.print(f"trial {trial.number}: {shown(TrialInfo.of(trial).arch)}, {why}")
    elif which.isdigit():
        if max_latency_ms is not None or min_accuracy is not None:
            raise BadOption("--max-latency-ms/--min-accuracy", "given", "only with 'nas export best'")
        trial = export.get_trial(st, int(which))
        console.print(f"trial {trial.number}: {shown(TrialInfo.of(trial).arch)}")
    else:
        raise BadOption("WHICH", which, "best or a trial number, e.g. nas export best or nas export 12")
    folder = out or exports / f"trial_{trial.number}"
    check_out(folder, force=force, ours=lambda f: export.is_export_of(f, st.study_name, trial.number))
    result = export.export_trial(
        st, trial, folder, weights=weights, onnx=onnx, torchscript=torchscript, name=name, artifacts=artifacts
    )
    console.print(
        f"its search run: {(st.metric_names or ['accuracy'])[0]} {trial.values[0]:.4f}, "
        f"latency {trial.values[1]:.3f} ms "
        f"({shown(TrialInfo.of(trial).latency_target or '?')}); metrics.json has the confirmed figures where there are"
    )
    for what, diff in result.checks.items():
        console.print(f"checked {what} against PyTorch: largest difference {diff:.2e}")
    console.print(f"written: {shown(', '.join(str(f) for f in result.files))}")
