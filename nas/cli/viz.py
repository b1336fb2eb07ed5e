"""``nas viz``: attention heatmaps and Grad-CAM of an exported model or a study's trial over your
images, and the pointing game on the embedded digits data. Parse, call nas.viz, print."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from nas.cli.console import console, err_console, shown
from nas.core.errors import BadOption, check_range
from nas.core.names import check_out, folder_of

if TYPE_CHECKING:
    import torch

    from nas.core.artifacts import ModelCard


def _load(
    export_dir: Path | None, study: str | None, trial: int | None, storage: str | None, artifacts: str | None = None
) -> tuple[torch.nn.Module, ModelCard, Path]:
    """The model, its description and the default output folder of what the user named."""
    if (export_dir is None) == (study is None):
        raise BadOption("nas viz", str(export_dir or ""), "give exactly one of EXPORT_DIR or --study NAME --trial N")
    if export_dir is not None:
        if trial is not None or storage is not None or artifacts is not None:
            raise BadOption(
                "--trial/--storage/--artifacts",
                trial if trial is not None else storage if storage is not None else artifacts,
                "only with --study (an export folder holds one model)",
            )
        if not export_dir.is_dir():
            raise BadOption("EXPORT_DIR", str(export_dir), "an existing export folder (written by nas export)")
        from nas.export import load_export

        model, card = load_export(export_dir)
        return model, card, export_dir / "viz"
    if trial is None:
        raise BadOption("--trial", None, f"the number of a trial of study {study!r} (nas report lists them)")
    from nas.export import load_trial

    model, card = load_trial(study, storage, trial, artifacts=artifacts)  # storage None: runs/<study>/study.db
    return model, card, folder_of(Path("runs"), study) / "viz" / f"trial-{trial}"


def _only_pngs(folder: Path) -> bool:
    """A folder of nas viz's own output (PNGs only): written again, as asked."""
    return all(p.suffix.lower() == ".png" for p in folder.rglob("*") if p.is_file())


def viz_cmd(
    export_dir: Path | None = typer.Argument(None, help="An export folder (written by nas export)"),
    study: str | None = typer.Option(None, "--study", help="Study name, instead of EXPORT_DIR"),
    trial: int | None = typer.Option(None, "--trial", help="Trial number in --study"),
    storage: str | None = typer.Option(
        None, "--storage", help="Storage of --study (default: sqlite:///runs/<study>/study.db)"
    ),
    artifacts: str | None = typer.Option(
        None, "--artifacts", help="Artifact store of --study, where it is not where the study says (moved, mounted)"
    ),
    images: list[Path] = typer.Option([], "--images", help="An image file or a folder of images; repeat for more"),
    digits: int = typer.Option(
        0, "--digits", help="Also the first N test images of the embedded digits (written to OUT/inputs/ as PNG)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the PNGs (default: EXPORT_DIR/viz or runs/<study>/viz/trial-<n>)"
    ),
    evaluate: bool = typer.Option(False, "--eval", help="Pointing game on the embedded digits test split"),
    cam_layer: str | None = typer.Option(
        None, "--cam-layer", help="Grad-CAM layer (default: the deepest stage of at least 7x7)"
    ),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per forward pass"),
    force: bool = typer.Option(False, "--force", help="Write into a --out folder that holds files other than PNGs"),
) -> None:
    """Attention heatmaps per stage beside Grad-CAM of the predicted class, one set of PNGs per image
    (<image>.png with every stage, <image>_<stage>.png and <image>_gradcam.png); with --eval, the
    pointing game (heatmap maximum inside the digit's box) on the embedded digits data."""
    from nas import viz

    if not images and not evaluate and not digits:
        raise BadOption("nas viz", "", "give --images PATH (repeatable), --digits N and/or --eval")
    check_range("--batch-size", batch_size, 1, 4096)
    check_range("--digits", digits, 0, 10_000, "a number of images")
    files = viz.image_files(images)
    model, card, default_out = _load(export_dir, study, trial, storage, artifacts)
    out = check_out(out or default_out, inputs=[*images, *files], force=force, ours=_only_pngs)
    split = viz.digits_test_split(card) if evaluate or digits else None  # refuse a non-digits model first
    if digits:
        files += viz.write_digits(split, digits, out / "inputs")
    split = split if evaluate else None
    if not viz.stage_mechanisms(model):
        console.print(f"{shown(str(card.architecture))} has no attention modules: Grad-CAM only")
    for path, predicted, written in viz.figures(
        model,
        files,
        out,
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
    if split is not None:
        rows = viz.evaluate(model, split, batch_size, cam_layer)
        h, w = split.images.shape[-2:]
        table = Table(
            title=f"Pointing game on {len(split.images)} test images of the embedded digits ({h}x{w}): "
            "fraction whose map maximum lies in the digit's box"
        )
        for col in ("map", "resolution", "pointing game"):
            table.add_column(col, justify="left" if col == "map" else "right")
        for r in rows:
            table.add_row(shown(r["method"]), r["resolution"], f"{r['score']:.3f}")
        console.print(table)
