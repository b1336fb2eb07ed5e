"""The ``nas`` application object and its ``bench`` group; the command modules add their commands."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Neural architecture search over attention placement in timm backbones.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; results are printed and written under runs/.")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
