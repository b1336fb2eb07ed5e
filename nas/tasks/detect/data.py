"""Detection data in ultralytics' format (images/, labels/, data.yaml).

The embedded set needs no download: several of scikit-learn's 1,797 real 8x8 handwritten digits per
canvas, each upscaled 2x, 3x or 4x, placed without overlap among fragments of other digits and
Gaussian noise; a box per digit (tight around its ink) with the digit as class. The source digits of
train and validation are disjoint. It is written once per set of options, deterministically from the
seed, under ``<runs>/data/`` (a folder named by the options' digest, made in a temporary folder and
renamed, so concurrent workers never see half of it). A user's own ultralytics dataset YAML is used
as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.errors import UserError

FORMAT = 1  # bump when the drawing changes: the folder name changes with it
SCALES = (2, 3, 4)  # an 8x8 digit drawn at 16, 24 or 32 pixels


class DetectionDataError(UserError):
    pass


@dataclass(frozen=True)
class DetectionData:
    """What a search needs to know of a detection dataset."""

    yaml: Path  # ultralytics' data.yaml
    names: tuple[str, ...]
    train_images: int
    val_images: int

    @property
    def num_classes(self) -> int:
        return len(self.names)


def digit_canvases(
    n: int,
    pool: np.ndarray,
    labels: np.ndarray,
    *,
    canvas: int,
    objects: tuple[int, int],
    clutter: int,
    noise: float,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, list[tuple[int, float, float, float, float]]]]:
    """``n`` canvases (float32 in [0, 1]) with their boxes ``(class, x0, y0, x1, y1)`` in pixels
    (exclusive ends): ``objects`` = (fewest, most) digits each, never overlapping one another."""
    out = []
    for _ in range(n):
        img = np.zeros((canvas, canvas), np.float32)
        want = int(rng.integers(objects[0], objects[1] + 1))
        boxes: list[tuple[int, float, float, float, float]] = []
        taken: list[tuple[int, int, int, int]] = []
        for _digit in range(want):
            for _attempt in range(30):
                k = int(rng.integers(0, len(pool)))
                scale = int(rng.choice(SCALES))
                glyph = np.kron(pool[k], np.ones((scale, scale), np.float32))
                size = glyph.shape[0]
                if size > canvas:
                    continue
                x, y = (int(v) for v in rng.integers(0, canvas - size + 1, 2))
                if any(
                    x < bx1 + 1 and bx0 < x + size + 1 and y < by1 + 1 and by0 < y + size + 1
                    for bx0, by0, bx1, by1 in taken
                ):
                    continue
                np.maximum(img[y : y + size, x : x + size], glyph, out=img[y : y + size, x : x + size])
                ys, xs = np.nonzero(glyph > 0.25)
                boxes.append((int(labels[k]), x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1))
                taken.append((x, y, x + size, y + size))
                break
        for _ in range(clutter):  # 6x6 fragments of other digits, outside every digit's cell
            src = pool[int(rng.integers(0, len(pool)))]
            frag = np.kron(src[1:7, 1:7] if rng.random() < 0.5 else src[2:8, 0:6], np.ones((2, 2), np.float32))
            fx, fy = (int(v) for v in rng.integers(0, canvas - 12 + 1, 2))
            if frag.sum() < 6 or any(
                fx < bx1 and bx0 < fx + 12 and fy < by1 and by0 < fy + 12 for bx0, by0, bx1, by1 in taken
            ):
                continue
            np.maximum(img[fy : fy + 12, fx : fx + 12], frag * 0.8, out=img[fy : fy + 12, fx : fx + 12])
        if noise > 0:
            img += rng.normal(0, noise, img.shape).astype(np.float32)
        np.clip(img, 0, 1, out=img)
        out.append((img, boxes))
    return out


def digits_boxes(root: Path, options: Mapping[str, Any]) -> DetectionData:
    """The embedded detection set for ``options`` (canvas, train, val, objects, clutter, noise, seed),
    written under ``root/data`` unless it is there already."""
    from PIL import Image
    from sklearn.datasets import load_digits

    opts = {k: options[k] for k in ("canvas", "train", "val", "min_objects", "max_objects", "clutter", "noise", "seed")}
    digest = hashlib.sha256(json.dumps({**opts, "format": FORMAT}, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(root) / "data" / f"digits-boxes-{digest}"
    names = tuple(str(d) for d in range(10))
    data = DetectionData(folder / "data.yaml", names, opts["train"], opts["val"])
    if (folder / "data.yaml").is_file():
        return data
    d = load_digits()
    images, labels = d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)
    order = np.random.default_rng(opts["seed"]).permutation(len(images))
    cut = int(0.75 * len(order))
    parts = {"train": order[:cut], "val": order[cut:]}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for k, (split, idx) in enumerate(parts.items()):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            rng = np.random.default_rng([opts["seed"], k, FORMAT])
            canvases = digit_canvases(
                opts[split],
                images[idx],
                labels[idx],
                canvas=opts["canvas"],
                objects=(opts["min_objects"], opts["max_objects"]),
                clutter=opts["clutter"],
                noise=opts["noise"],
                rng=rng,
            )
            c = opts["canvas"]
            for i, (img, boxes) in enumerate(canvases):
                Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp / "images" / split / f"{i:05d}.png")
                lines = [
                    f"{cls} {(x0 + x1) / 2 / c:.6f} {(y0 + y1) / 2 / c:.6f} {(x1 - x0) / c:.6f} {(y1 - y0) / c:.6f}"
                    for cls, x0, y0, x1, y1 in boxes
                ]
                (tmp / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        spec = {
            "path": str(folder.resolve()),
            "train": "images/train",
            "val": "images/val",
            "names": dict(enumerate(names)),
        }
        import yaml

        (tmp / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (tmp / "options.json").write_text(json.dumps({**opts, "format": FORMAT}, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker wrote it first: the same bytes
            if not (folder / "data.yaml").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data


MAX_FILES = 1_000_000  # entries a split may hold (a split pointing at "/" is refused, not walked)
MAX_LABEL_BYTES = 1_000_000  # one image's label file
MAX_LIST_BYTES = 100_000_000  # a split given as a text file of image paths
MAX_CLASSES = 100_000
IMAGE_SUFFIXES = {  # what ultralytics reads as images
    ".avif", ".bmp", ".dng", ".heic", ".heif", ".jp2", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp",
}  # fmt: skip
SHOWN = 20  # problems listed in one message


def user_dataset(path: Path) -> DetectionData:
    """A user's ultralytics dataset YAML, read as data and checked before anything trains: ``names``,
    ``train`` and ``val`` (folders of images, or text files listing them, under an absolute ``path``), no
    ``download`` script; every image's header and every label file read (rows ``class x y w h`` or a
    polygon, classes below the number of names, coordinates in [0, 1]); splits bounded in size and
    never empty. A DetectionDataError names each problem with its file (and line). Checked once per
    process for a file that did not change."""
    key = (str(path.resolve()) if path.exists() else str(path), path.stat().st_mtime_ns if path.is_file() else 0)
    if key not in _CHECKED:
        _CHECKED[key] = _check_dataset(path)
    return _CHECKED[key]


_CHECKED: dict[tuple[str, int], DetectionData] = {}


def _check_dataset(path: Path) -> DetectionData:
    from nas.core.yamlio import load

    if not path.is_file():
        raise DetectionDataError(
            f"data.yaml: {path} does not exist (or is not a file); give an ultralytics dataset YAML"
        )
    d, _ = load(path)
    if not isinstance(d, Mapping):
        raise DetectionDataError(f"{path}: expected a mapping with train, val and names")
    missing = [k for k in ("train", "val", "names") if k not in d]
    if missing:
        raise DetectionDataError(
            f"{path}: missing {', '.join(missing)}; an ultralytics dataset YAML has train, val and names"
        )
    if "download" in d:
        raise DetectionDataError(
            f"{path}: has 'download'; nothing is downloaded here: remove it and give the data's path"
        )
    names = d["names"]
    names = tuple(str(v) for v in (names.values() if isinstance(names, Mapping) else names)) if names else ()
    if not 1 <= len(names) <= MAX_CLASSES:
        raise DetectionDataError(f"{path}: 'names' has {len(names)} classes; expected 1 to {MAX_CLASSES:,}")
    base = Path(str(d.get("path") or path.parent))
    if d.get("path") and not base.is_absolute():  # ultralytics would look for it under its own datasets folder
        raise DetectionDataError(f"{path}: path {d['path']!r} is relative; give the dataset's absolute path")
    counts = [len(_split_images(path, split, base / str(d[split]), len(names))) for split in ("train", "val")]
    return DetectionData(path.resolve(), names, counts[0], counts[1])


def _split_images(path: Path, split: str, where: Path, nc: int) -> list[Path]:
    """The images of a split, each readable and with a valid label file (or none: a background image)."""
    if where.is_dir():
        images = _walk(path, split, where)
    elif where.is_file():
        if where.stat().st_size > MAX_LIST_BYTES:
            raise DetectionDataError(
                f"{path}: {split}: {where} is over {MAX_LIST_BYTES:,} bytes; expected a list of images"
            )
        images = [Path(x) if Path(x).is_absolute() else where.parent / x for x in where.read_text().split()]
        gone = [p for p in images if not p.is_file()]
        if gone:
            raise DetectionDataError(
                f"{path}: {split}: {where} lists {len(gone)} image(s) that are not files, e.g. {gone[0]}"
            )
    elif where.exists():
        raise DetectionDataError(f"{path}: {split}: {where} is neither a folder of images nor a list of them")
    else:
        raise DetectionDataError(f"{path}: {split}: {where} does not exist")
    if not images:
        raise DetectionDataError(f"{path}: {split}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {where}")
    problems = _unreadable(images) + _label_problems(images, nc)
    if problems:
        more = f"\n  ... and {len(problems) - SHOWN:,} more" if len(problems) > SHOWN else ""
        raise DetectionDataError(
            f"{path}: {split}: {len(problems):,} problem(s) in its images and labels (ultralytics would skip them "
            f"or stop with a traceback):\n  " + "\n  ".join(problems[:SHOWN]) + more
        )
    return images


def _walk(path: Path, split: str, where: Path) -> list[Path]:
    """The image files under ``where``: at most MAX_FILES entries looked at, only regular files and folders."""
    images, seen, stack = [], 0, [where]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for e in entries:
                seen += 1
                if seen > MAX_FILES:
                    raise DetectionDataError(
                        f"{path}: {split}: {where} holds more than {MAX_FILES:,} entries; give the folder of this "
                        "split's images"
                    )
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                    images.append(Path(e.path))
    return sorted(images)


def _unreadable(images: list[Path]) -> list[str]:
    from PIL import Image

    out = []
    for p in images:
        try:
            with Image.open(p) as im:
                w, h = im.size
            if w < 1 or h < 1:
                out.append(f"{p}: an image of {w}x{h} pixels")
        except Exception as e:  # not an image, truncated header, a format PIL does not read
            out.append(f"{p}: cannot be read as an image ({e.__class__.__name__})")
    return out


def _label_problems(images: list[Path], nc: int) -> list[str]:
    """Each label file's rows checked as ultralytics reads them: ``images/`` -> ``labels/``, ``.txt``."""
    import math

    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    out = []
    for img in images:
        label = Path(sb.join(str(img).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")
        if not label.exists():
            continue  # an image without objects
        if not label.is_file() or label.stat().st_size > MAX_LABEL_BYTES:
            out.append(f"{label}: not a label file of at most {MAX_LABEL_BYTES:,} bytes")
            continue
        for n, line in enumerate(label.read_text(errors="replace").splitlines(), 1):
            row = line.split()
            if not row:
                continue
            try:
                values = [float(v) for v in row]
            except ValueError:
                out.append(f"{label}:{n}: {line.strip()[:60]!r} is not numbers")
                continue
            cls, coords = values[0], values[1:]
            if not (cls.is_integer() and 0 <= cls < nc):
                out.append(f"{label}:{n}: class {row[0]} is not one of 0 to {nc - 1} ({nc} names)")
            elif not (len(coords) == 4 or (len(coords) >= 6 and len(coords) % 2 == 0)):
                out.append(f"{label}:{n}: {len(coords)} coordinates; expected x y w h, or a polygon's x y pairs")
            elif not all(math.isfinite(v) and 0 <= v <= 1 for v in coords):
                out.append(
                    f"{label}:{n}: coordinates must be finite and in [0, 1] (normalised); got {line.strip()[:60]}"
                )
    return out


def dataset(cfg: Any, root: Path) -> DetectionData:
    """The dataset a detection space's ``data`` section (its typed value) names: the embedded set
    (written under ``root/data`` once) or the user's YAML."""
    if cfg.source == "ultralytics":
        return user_dataset(Path(cfg.yaml))
    return digits_boxes(root, cfg.as_dict())
