"""``nas viz``: attention heatmaps and Grad-CAM of an exported model or a study's trial over your
images, and the pointing game on the embedded digits data. Parse, call nas.viz, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nas.cli.console import console, err_console, shown

Opt = typer.Option
ExportDir = Annotated[Path | None, typer.Argument(help="An export folder (written by nas export)")]
Study = Annotated[str | None, Opt("--study", help="Study name, instead of EXPORT_DIR")]
Trial = Annotated[int | None, Opt("--trial", help="Trial number in --study")]
Storage = Annotated[str | None, Opt("--storage", help="Storage of --study (default: sqlite:///runs/<study>/study.db)")]
Artifacts = Annotated[
    str | None, Opt("--artifacts", help="Artifact store of --study, where it is not where the study says (moved)")
]
Images = Annotated[list[Path], Opt("--images", help="An image file or a folder of images; repeat for more")]
Digits = Annotated[
    int, Opt("--digits", help="Also the first N test images of the embedded digits (written to OUT/inputs/ as PNG)")
]
Out = Annotated[
    Path | None, Opt("--out", help="Folder for the PNGs (default: EXPORT_DIR/viz or runs/<study>/viz/trial-<n>)")
]
Evaluate = Annotated[bool, Opt("--eval", help="Pointing game on the embedded digits test split")]
CamLayer = Annotated[str | None, Opt("--cam-layer", help="Grad-CAM layer (default: the deepest stage of at least 7x7)")]
BatchSize = Annotated[int, Opt("--batch-size", help="Images per forward pass")]
Force = Annotated[bool, Opt("--force", help="Write into a --out folder that holds files other than PNGs")]


def viz_cmd(
    export_dir: ExportDir = None,
    study: Study = None,
    trial: Trial = None,
    storage: Storage = None,
    artifacts: Artifacts = None,
    images: Images = [],  # noqa: B006 (typer reads the default; it is never mutated)
    digits: Digits = 0,
    out: Out = None,
    evaluate: Evaluate = False,
    cam_layer: CamLayer = None,
    batch_size: BatchSize = 100,
    force: Force = False,
) -> None:
    """Attention heatmaps per stage beside Grad-CAM of the predicted class, one set of PNGs per image
    (<image>.png with every stage, <image>_<stage>.png and <image>_gradcam.png); with --eval, the
    pointing game (heatmap maximum inside the digit's box) on the embedded digits data."""
    from nas import viz

    job = viz.prepare(export_dir, study, trial, storage, artifacts, images, digits, out, evaluate, batch_size, force)
    if not viz.stage_mechanisms(job.model):
        console.print(f"{shown(str(job.card.architecture))} has no attention modules: Grad-CAM only")
    card = job.card
    for path, predicted, written in viz.figures(
        job.model,
        job.files,
        job.out,
        in_chans=card.in_chans,
        input_size=card.input_size,
        imagenet=viz.imagenet_input(card),
        layer=cam_layer,
        batch_size=batch_size,
        warn=lambda message: err_console.print(f"[yellow]warning:[/yellow] {shown(message)}", highlight=False),
    ):
        console.print(
            f"{shown(str(path))}: predicted class {predicted}; {len(written)} PNGs: "
            f"{shown(', '.join(p.name for p in written))} in {shown(str(written[0].parent))}"
        )
    if job.split is not None:
        console.print(_pointing_table(job.split, viz.evaluate(job.model, job.split, batch_size, cam_layer)))


def _pointing_table(split: Any, rows: list[dict]) -> Table:
    h, w = split.images.shape[-2:]
    table = Table(
        title=f"Pointing game on {len(split.images)} test images of the embedded digits ({h}x{w}): "
        "fraction whose map maximum lies in the digit's box"
    )
    for col in ("map", "resolution", "pointing game"):
        table.add_column(col, justify="left" if col == "map" else "right")
    for r in rows:
        table.add_row(shown(r["method"]), r["resolution"], f"{r['score']:.3f}")
    return table
