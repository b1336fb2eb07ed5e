"""Options several commands share, declared once (``Annotated`` types for typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Study = Annotated[str | None, typer.Option(help="Study name (default: the only study in the storage)")]
Storage = Annotated[str | None, typer.Option(help="Optuna storage URL (default: sqlite:///runs/<study>/study.db)")]
Artifacts = Annotated[
    str | None,
    typer.Option(help="Artifact store of the study, where it is not where the study says (moved, mounted elsewhere)"),
]
Force = Annotated[bool, typer.Option("--force", help="Write into a --out folder that already holds other files")]
OutFolder = Annotated[Path | None, typer.Option(help="Folder to write (default: under runs/<study>/)")]
