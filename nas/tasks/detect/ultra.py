"""ultralytics, imported once per process offline and quiet: nothing downloaded (fonts, weights, update
checks), no telemetry, its settings in a temporary folder of this process (removed at exit) rather
than the user's home, our twelve mechanisms registered for its model YAMLs, and its console output
kept for a log file of our choosing (``logged_to``)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from nas.core.errors import UserError

OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",  # no online checks, downloads or telemetry
    "YOLO_AUTOINSTALL": "false",  # no pip installs of missing requirements
    "YOLO_VERBOSE": "false",  # no progress bars or banners on the console
    # its checkpoints loaded weights-only against its allow-list (and our aliases, added by register()),
    # model YAMLs built without eval: a second wall behind our own checks (read_checkpoint, register())
    "ULTRALYTICS_SAFE_LOAD": "1",
}
_loaded: ModuleType | None = None


class MissingUltralytics(UserError):
    pass


class CheckpointError(UserError):
    pass


def load() -> ModuleType:
    """``ultralytics``, set up as the module's text says (the first call decides; later calls return it)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if "ultralytics" not in sys.modules:
        os.environ.update(OFFLINE_ENV)
        config = Path(tempfile.mkdtemp(prefix="nas-ultralytics-"))
        atexit.register(shutil.rmtree, config, ignore_errors=True)
        os.environ["YOLO_CONFIG_DIR"] = str(config)
        _font_into(config)
    from PIL import Image

    pil_open, omp = Image.open, os.environ.get("OMP_NUM_THREADS")
    try:
        import ultralytics
    except ImportError as e:
        raise MissingUltralytics(
            f"a detection space needs ultralytics ({e}); install the [yolo] extra: pip install -e '.[yolo]'"
        ) from None
    import ultralytics.utils.patches  # noqa: F401  (patches PIL on import: undone below)
    from ultralytics.utils import SETTINGS

    # ultralytics' import changes the process: PIL's Image.open becomes a wrapper that tries to install
    # pi-heif on an unreadable image, and OMP_NUM_THREADS=1 is set for every process started later (our
    # workers, DDP ranks). Both are undone so the rest of the process behaves as without it.
    Image.open = getattr(ultralytics.utils.patches, "_image_open", pil_open)  # the original, if imported before us
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)

    with contextlib.suppress(Exception):
        SETTINGS.update({"sync": False})  # no telemetry even where the user's settings allowed it
    from attention.yolo import register

    register()
    logging.getLogger("ultralytics").setLevel(logging.ERROR)
    _loaded = ultralytics
    return ultralytics


def read_checkpoint(path: Path, remedy: str) -> dict[str, Any]:
    """The ultralytics checkpoint at ``path`` (``last.pt``, ``best.pt``) read as data: weights-only, with
    only ultralytics' own layers and our aliases allowed, so a crafted pickle runs nothing; a truncated,
    foreign or crafted file is a CheckpointError naming it, its cause and ``remedy``."""
    load()
    from ultralytics.nn.tasks import torch_safe_load

    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as e:  # truncated, not a checkpoint, a global outside the allow-list, a missing module
        import pickle

        inner = e.__cause__ or e
        if isinstance(inner, pickle.UnpicklingError):
            cause = "it names Python objects other than ultralytics' layers and attention's, so it was not loaded"
        elif isinstance(inner, (RuntimeError, EOFError)):
            cause = f"empty, truncated or not a torch checkpoint: {str(inner).splitlines()[0][:120]}"
        else:
            cause = f"{type(inner).__name__}: {str(inner).splitlines()[0][:200] if str(inner) else ''}"
        raise CheckpointError(f"{path} cannot be read as an ultralytics checkpoint ({cause}); {remedy}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_args"), dict):
        raise CheckpointError(f"{path} is not a checkpoint that ultralytics' trainer wrote (no train_args); {remedy}")
    return ckpt


def _font_into(config: Path) -> None:
    """ultralytics downloads Arial.ttf into its settings folder when it first draws a label; a font
    that ships with matplotlib is put there under that name, so nothing is fetched."""
    try:
        import matplotlib

        font = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():  # ultralytics' settings live in <YOLO_CONFIG_DIR>/Ultralytics
            for where in (config, config / "Ultralytics"):
                where.mkdir(parents=True, exist_ok=True)
                for name in ("Arial.ttf", "Arial.Unicode.ttf"):  # the second for class names beyond ASCII
                    shutil.copyfile(font, where / name)
    except ImportError:
        pass


@contextlib.contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """ultralytics' log lines (its training and validation summaries) go to ``path`` only, for the
    duration; the console stays ours."""
    logger = logging.getLogger("ultralytics")
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = logger.level, list(logger.handlers), logger.propagate
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = saved[1], saved[2]
        logger.setLevel(saved[0])
        handler.close()
