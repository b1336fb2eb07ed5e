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


def user_dataset(path: Path) -> DetectionData:
    """A user's ultralytics dataset YAML: checked enough to name what is wrong before training."""
    from nas.core.yamlio import load

    if not path.is_file():
        raise DetectionDataError(f"data.yaml: {path} does not exist; give an ultralytics dataset YAML")
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
    names = tuple(str(v) for v in (names.values() if isinstance(names, Mapping) else names))
    if len(names) < 1:
        raise DetectionDataError(f"{path}: 'names' is empty")
    base = Path(str(d.get("path") or path.parent))
    if d.get("path") and not base.is_absolute():  # ultralytics would look for it under its own datasets folder
        raise DetectionDataError(f"{path}: path {d['path']!r} is relative; give the dataset's absolute path")
    counts = []
    for split in ("train", "val"):
        where = base / str(d[split])
        if not where.exists():
            raise DetectionDataError(f"{path}: {split}: {where} does not exist")
        counts.append(sum(1 for _ in where.rglob("*.*")) if where.is_dir() else len(where.read_text().split()))
    return DetectionData(path.resolve(), names, counts[0], counts[1])


def dataset(cfg: Any, root: Path) -> DetectionData:
    """The dataset a detection space's ``data`` section (its typed value) names: the embedded set
    (written under ``root/data`` once) or the user's YAML."""
    if cfg.source == "ultralytics":
        return user_dataset(Path(cfg.yaml))
    return digits_boxes(root, cfg.as_dict())
