"""Where the attention looks: per-stage attention maps captured with forward hooks, Grad-CAM, heatmap
figures, and the pointing game on the embedded digits data (whose object boxes are known).

Capture adds forward hooks to the ``attention.Attention`` modules of a model (and, for some, to one of
their submodules) for one forward pass and removes them afterwards; the hooks return nothing, so the
model computes exactly what it computes without them, and a model that is not being visualised
carries no hook at all. Each hook reduces what it sees to one (B, h, w) map at once, inside the
forward pass, because the block may later change the tensor in place (``x += shortcut``).

The map each mechanism gives (mechanisms with a spatial gate: that gate; channel-only ones: the
attention-weighted activation):

- cbam: its spatial gate sigmoid(BN(conv([max_c; mean_c]))), from the output of the gate's BN.
- gam: its spatial gate sigmoid(BN(conv(...))), one value per channel and pixel, averaged over channels.
- ca: the product g_h x g_w of the two coordinate gates (one per row, one per column), averaged over
  channels; the module's own ``gates`` recomputed from its input.
- simam: the energy-based gate sigmoid(1/E) of every neuron (``gate`` on the module's input), averaged
  over channels.
- sa: the gate sigmoid(w * GN(x) + b) of ShuffleAttention's spatial halves, from the GroupNorm output,
  averaged over those channels (the channel halves have no spatial variation).
- cca: the attention each position receives: every pixel's softmax weights over its row and column,
  summed per key position; recomputed from the input of each recurrence (a hook on the value
  projection sees it) and averaged over the recurrences.
- se, eca, soca, nam, sk, s2: mean over channels of |output| = sum_c s_c |x_c| / C for a channel
  gate s. NAM's gate varies per element, but its weights |gamma| / sum |gamma| keep it close to 0.5,
  so its map would be flat; SK's and S2's selection is a softmax over branches per channel, with no
  spatial part.
- any other ``attention.Attention`` subclass: the same attention-weighted activation map.

Caveat when comparing: an attention-weighted activation map mostly shows where the backbone's own
features are strong, while a spatial gate shows only what the mechanism adds; a gate may also learn
to point away from the object (it scales features, it is not trained to localise).

Stages are the model's ``feature_info`` entries (timm): each attention module belongs to the stage
whose module contains it, keyed by that module's name (``layer3`` in ResNets, ``blocks.4`` in
EfficientNets; the top-level child for models without ``feature_info``). A stage with several blocks has
one module per block: each block's map is normalised to [0, 1], the maps are upsampled to the largest
of them and averaged, so every block of the stage counts the same. Every returned map is normalised
per image to [0, 1] (a constant map becomes all zeros).

Pointing game: a map hits when its maximum, after bilinear upsampling to the input size, falls inside
the object's box; a constant map (no maximum) misses. Two baselines that need no model: a uniformly
random point, whose expected hit rate is the box area over the image area (exact, not sampled), and
the image centre, which is strong wherever objects sit near the middle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

import attention
from nas.core.errors import BadOption, UserError
from nas.core.names import folder_of, replacing

if TYPE_CHECKING:
    from nas.core.artifacts import ModelCard
    from nas.tasks.classify.data import DigitsSplit

# Grad-CAM's default layer is the deepest stage whose output has at least this many pixels on each
# side: a 1x1 or 2x2 map (the last stages at small inputs) cannot point inside an object's box.
MIN_CAM_SIDE = 7

Emit = Callable[[torch.Tensor], None]
Tap = Callable[[nn.Module, Emit], RemovableHandle]


class ImageError(UserError):
    pass


# ----------------------------------------------------------------------------------------------------
# Capture
# ----------------------------------------------------------------------------------------------------


def _on_forward(
    module: nn.Module, reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], emit: Emit
) -> RemovableHandle:
    """A hook on ``module`` that emits ``reduce(input, output)`` and leaves the output as it is."""

    def hook(_: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        emit(reduce(args[0], output).detach().float())

    return module.register_forward_hook(hook)


def _activation(m: nn.Module, emit: Emit) -> RemovableHandle:
    return _on_forward(m, lambda _x, y: y.abs().mean(1), emit)


def _cbam(m: attention.CBAM, emit: Emit) -> RemovableHandle:
    return _on_forward(m.bn, lambda _x, z: z.sigmoid()[:, 0], emit)


def _gam(m: attention.GAM, emit: Emit) -> RemovableHandle:
    return _on_forward(m.bn2, lambda _x, z: z.sigmoid().mean(1), emit)


def _coord(m: attention.CoordAtt, emit: Emit) -> RemovableHandle:
    def reduce(x: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        g_h, g_w = m.gates(x)
        return (g_h * g_w).mean(1)

    return _on_forward(m, reduce, emit)


def _simam(m: attention.SimAM, emit: Emit) -> RemovableHandle:
    return _on_forward(m, lambda x, _y: m.gate(x).mean(1), emit)


def _shuffle(m: attention.ShuffleAttention, emit: Emit) -> RemovableHandle:
    def reduce(_x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # z: (B * groups, C / 2G, H, W)
        gate = (m.sweight * z + m.sbias).sigmoid()
        return gate.reshape(-1, m.groups * z.shape[1], *z.shape[2:]).mean(1)

    return _on_forward(m.gn, reduce, emit)


def _criss_cross(m: attention.CrissCrossAttention, emit: Emit) -> RemovableHandle:
    def reduce(x: torch.Tensor, _v: torch.Tensor) -> torch.Tensor:
        a = m.attention(x)  # (B, H, W, H + W): query (i, w) over its column (j, w), then its row (i, j)
        h = x.shape[2]
        from_columns = a[..., :h].sum(1).transpose(1, 2)  # (B, W, H) [b, w, j] -> (B, H, W)
        from_rows = a[..., h:].sum(2)
        return from_columns + from_rows

    return _on_forward(m.value, reduce, emit)


# Checked in order with isinstance, so subclasses of a mechanism get its map.
_TAPS: tuple[tuple[type, Tap], ...] = (
    (attention.CBAM, _cbam),
    (attention.GAM, _gam),
    (attention.CoordAtt, _coord),
    (attention.SimAM, _simam),
    (attention.ShuffleAttention, _shuffle),
    (attention.CrissCrossAttention, _criss_cross),
)


def _tap(module: nn.Module) -> Tap:
    for cls, tap in _TAPS:
        if isinstance(module, cls):
            return tap
    return _activation


def stage_of(model: nn.Module) -> Callable[[str], str]:
    """A function from a module's qualified name to its stage: the first ``feature_info`` entry whose
    module ends at or after it in definition order (so ``blocks.3`` belongs to an entry ``blocks.4``
    that follows ``blocks.2``, as timm groups EfficientNet stages); the top-level child otherwise."""
    names = [n for n, _ in model.named_modules()]
    position = {n: i for i, n in enumerate(names)}
    ends: list[tuple[int, str]] = []
    for entry in getattr(model, "feature_info", None) or []:
        stage = entry["module"]
        inside = [i for i, n in enumerate(names) if n == stage or n.startswith(stage + ".")]
        if inside:
            ends.append((max(inside), stage))

    def lookup(name: str) -> str:
        for end, stage in ends:
            if position[name] <= end:
                return stage
        return name.split(".")[0]

    return lookup


def attention_modules(model: nn.Module) -> dict[str, list[tuple[str, attention.Attention]]]:
    """The ``attention.Attention`` modules of ``model`` by stage, in forward order: {stage: [(name, module)]}."""
    stage = stage_of(model)
    found: dict[str, list[tuple[str, attention.Attention]]] = {}
    for name, m in model.named_modules():
        if isinstance(m, attention.Attention):
            found.setdefault(stage(name), []).append((name, m))
    return found


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> the same maps scaled per image to [0, 1]; a constant map becomes zeros."""
    lo = maps.amin((1, 2), keepdim=True)
    span = maps.amax((1, 2), keepdim=True) - lo
    return (maps - lo) / torch.where(span > 0, span, torch.ones_like(span))


def _resize(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class AttentionRecorder:
    """Context manager that records the attention maps of one forward pass run inside it, for use
    where the caller wants the model's output too::

        with AttentionRecorder(model) as rec:
            logits = model(images)
        maps = rec.maps()          # {stage: (B, H, W) in [0, 1]}

    The hooks are removed on exit, also when the forward pass raises."""

    def __init__(self, model: nn.Module):
        self.modules = attention_modules(model)
        self._emitted: dict[str, list[torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> AttentionRecorder:
        self._emitted = {}
        for group in self.modules.values():
            for name, m in group:
                self._handles.append(_tap(m)(m, self._emitted.setdefault(name, []).append))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def maps(self) -> dict[str, torch.Tensor]:
        """Per stage the (B, H, W) map of the recorded pass: each module's emissions averaged (several
        for Criss-Cross's recurrences), normalised, averaged over the stage's blocks at the largest
        block resolution, normalised again."""
        out = {}
        for stage, group in self.modules.items():
            per_block = [
                normalise(torch.stack(self._emitted[name]).mean(0)) for name, _ in group if self._emitted.get(name)
            ]
            if not per_block:
                continue
            size = max((t.shape[-2:] for t in per_block), key=lambda s: s[0] * s[1])
            out[stage] = normalise(torch.stack([_resize(t, size) for t in per_block]).mean(0))
        return out


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside (BN running statistics, dropout off), the model's own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def attention_maps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per stage with attention, the (B, H, W) attention map of ``images`` (B, C, H, W), normalised per
    image to [0, 1], at the stage's own resolution. Runs one forward pass in eval mode without
    gradients (the model's mode is restored afterwards); nothing stays registered on the model."""
    with _eval_mode(model), torch.no_grad(), AttentionRecorder(model) as rec:
        model(images)
    return rec.maps()


def stage_mechanisms(model: nn.Module) -> dict[str, str]:
    """{stage: mechanism name(s)} of the stages with attention, e.g. {'layer2': 'cbam'}."""
    return {
        stage: "+".join(dict.fromkeys(m.spec.name for _, m in group))
        for stage, group in attention_modules(model).items()
    }


# ----------------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------------


def _stage_names(model: nn.Module) -> list[str]:
    return [e["module"] for e in getattr(model, "feature_info", None) or []]


def cam_layer(model: nn.Module, images: torch.Tensor) -> str:
    """Grad-CAM's default layer: the deepest ``feature_info`` stage whose output at the size of
    ``images`` has at least MIN_CAM_SIDE pixels on each side (the first stage if none has); found with
    one forward pass of a single image."""
    names = _stage_names(model)
    if not names:
        raise UserError("the model has no feature_info listing its stages; name a Grad-CAM layer")
    sides: dict[str, int] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda _m, _a, out, n=n: sides.__setitem__(n, min(out.shape[-2:])))
        for n in names
    ]
    try:
        with _eval_mode(model), torch.no_grad():
            model(images[:1])
    finally:
        for h in handles:
            h.remove()
    return ([n for n in names if sides[n] >= MIN_CAM_SIDE] or names[:1])[-1]


def grad_cam(
    model: nn.Module, images: torch.Tensor, target_layer: str | None = None, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., arXiv:1610.02391) of ``classes`` (default: each image's predicted
    class): ReLU(sum_c alpha_c A_c), alpha_c the spatial mean of d score / d A_c, A the output of the
    module ``target_layer`` (default: ``cam_layer``). Returns (B, H, W) maps normalised per image to
    [0, 1] at the layer's resolution. Runs in eval mode (restored afterwards); parameter gradients
    are left untouched."""
    layer = target_layer or cam_layer(model, images)
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise UserError(
            f"Grad-CAM layer {layer!r} is not a module of the model; its stages are "
            f"{', '.join(_stage_names(model)) or 'unknown (no feature_info)'}"
        ) from None
    kept: list[torch.Tensor] = []

    def keep(_m: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        # The rest of the network gets a copy, so an in-place op downstream cannot change the
        # activation (or invalidate its gradient) that Grad-CAM reads.
        kept.append(output)
        return output.clone()

    handle = module.register_forward_hook(keep)
    try:
        with _eval_mode(model), torch.enable_grad():
            logits = model(images)
            chosen = classes if classes is not None else logits.argmax(1)
            score = logits.gather(1, chosen.to(logits.device).reshape(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, kept[0])
    finally:
        handle.remove()
    weights = grads.float().mean((2, 3), keepdim=True)
    return normalise((weights * kept[0].detach().float()).sum(1).relu())


# ----------------------------------------------------------------------------------------------------
# Pointing game
# ----------------------------------------------------------------------------------------------------


def _hits(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """points (B, 2) as (y, x); boxes (B, 4) as x0, y0, x1, y1 with x1, y1 exclusive."""
    y, x = points[:, 0], points[:, 1]
    b = boxes.to(points.device)
    return (b[:, 0] <= x) & (x < b[:, 2]) & (b[:, 1] <= y) & (y < b[:, 3])


def pointing_hits(maps: torch.Tensor, boxes: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    """(B,) bool: whether each map's maximum, upsampled bilinearly to ``input_size``, lies in its box.
    A constant map has no maximum and misses."""
    up = _resize(maps.float(), input_size).flatten(1)
    idx = up.argmax(1)
    points = torch.stack([idx // input_size[1], idx % input_size[1]], 1)
    return _hits(points, boxes) & (up.amax(1) > up.amin(1))


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, input_size: Sequence[int]) -> float:
    """Fraction of images whose map maximum (at the input size) falls inside the object's box."""
    return float(pointing_hits(maps, boxes, input_size).float().mean())


def random_baseline(boxes: torch.Tensor, input_size: Sequence[int]) -> float:
    """Expected pointing-game score of a uniformly random pixel: mean box area / image area (exact)."""
    h, w = input_size
    b = boxes.float()
    width = (b[:, 2].clamp(0, w) - b[:, 0].clamp(0, w)).clamp_min(0)
    height = (b[:, 3].clamp(0, h) - b[:, 1].clamp(0, h)).clamp_min(0)
    return float((width * height).mean() / (h * w))


def centre_baseline(boxes: torch.Tensor, input_size: Sequence[int]) -> float:
    """Pointing-game score of always pointing at the centre pixel (H // 2, W // 2)."""
    centre = torch.tensor([[input_size[0] // 2, input_size[1] // 2]]).expand(len(boxes), 2)
    return float(_hits(centre, boxes).float().mean())


def evaluate(
    model: nn.Module, split: DigitsSplit, batch_size: int = 100, layer: str | None = None
) -> list[dict[str, Any]]:
    """The pointing game on a split of the embedded digits data: one row per stage with attention,
    one for Grad-CAM of the predicted class at ``layer`` (default: ``cam_layer``), and the centre and
    random-point baselines. Each row has ``method``, ``resolution`` (the map's h x w, or '-'),
    ``score`` (the fraction of hits) and ``images``."""
    device = next(model.parameters()).device
    size = tuple(split.images.shape[-2:])
    hits: dict[str, list[torch.Tensor]] = {}
    resolution: dict[str, str] = {}
    names = stage_mechanisms(model)
    for start in range(0, len(split.images), batch_size):
        x = split.images[start : start + batch_size].to(device)
        boxes = split.boxes[start : start + batch_size]
        found = {f"attention {stage} ({names[stage]})": m for stage, m in attention_maps(model, x).items()}
        layer = layer or cam_layer(model, x)
        found[f"Grad-CAM {layer}"] = grad_cam(model, x, layer)
        for method, m in found.items():
            hits.setdefault(method, []).append(pointing_hits(m, boxes, size).cpu())
            resolution[method] = f"{m.shape[-2]}x{m.shape[-1]}"
    n = len(split.images)
    rows = [
        {"method": k, "resolution": resolution[k], "score": float(torch.cat(v).float().mean()), "images": n}
        for k, v in hits.items()
    ]
    rows.append({"method": "centre point", "resolution": "-", "score": centre_baseline(split.boxes, size), "images": n})
    rows.append(
        {
            "method": "uniformly random point (expected)",
            "resolution": "-",
            "score": random_baseline(split.boxes, size),
            "images": n,
        }
    )
    return rows


# ----------------------------------------------------------------------------------------------------
# Images in, figures out
# ----------------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders by their images (sorted)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise ImageError(f"--images: the folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += inside
        elif p.is_file():
            files.append(p)
        else:
            raise ImageError(f"--images: {p} does not exist")
    return files


def load_image(path: Path, in_chans: int, input_size: Sequence[int], imagenet: bool) -> torch.Tensor:
    """The image at ``path`` as the model sees it, before normalisation: (in_chans, H, W) in [0, 1].
    ``imagenet``: timm's evaluation transform (resize, centre crop) as the ImageFolder and CIFAR data
    use; otherwise a plain resize to ``input_size`` (the embedded digits are not normalised)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    if in_chans not in (1, 3):
        raise ImageError(f"the model takes {in_chans} input channels; images can be loaded for 1 (grey) or 3 (RGB)")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if in_chans == 1 else "RGB")
            if imagenet:
                from timm.data import create_transform

                pixels = create_transform(tuple(input_size), is_training=False, normalize=False)(im)  # uint8
            else:
                pixels = pil_to_tensor(im.resize((input_size[1], input_size[0]), Image.Resampling.BILINEAR))
            return pixels.float() / 255
    except Image.DecompressionBombError:
        raise ImageError(
            f"cannot read image {path}: it has more pixels than PIL opens (over {2 * Image.MAX_IMAGE_PIXELS:,}, "
            "a guard against decompression bombs); resize it first"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from None


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> normalised with the ImageNet mean and std that timm's transforms use."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=images.device)[:, None, None]
    return (images - mean) / std


def save_figure(
    image: torch.Tensor,
    maps: dict[str, torch.Tensor],
    cam: torch.Tensor | None,
    path: Path,
    title: str = "",
    cam_label: str = "Grad-CAM",
) -> Path:
    """A PNG: the input (C, H, W in [0, 1]), then each map of ``maps`` ({panel title: (h, w) in [0, 1]})
    and ``cam`` upsampled to the input and overlaid on it, each with a colour bar."""
    from matplotlib.figure import Figure

    panels = list(maps.items()) + ([(cam_label, cam)] if cam is not None else [])
    size = tuple(image.shape[-2:])
    pixels = image.detach().float().cpu().clamp(0, 1)
    shown = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    grey = dict(cmap="gray", vmin=0, vmax=1) if pixels.shape[0] == 1 else {}
    fig = Figure(figsize=(3.2 * (1 + len(panels)), 3.4), layout="constrained")
    axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    axes[0].imshow(shown, **grey)
    axes[0].set_title("input", fontsize=9)
    for ax, (label, m) in zip(axes[1:], panels, strict=True):
        up = _resize(m.detach().float().cpu()[None], size)[0].numpy()
        ax.imshow(shown, **grey)
        overlay = ax.imshow(up, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        fig.colorbar(overlay, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(label, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    with replacing(path) as tmp:  # an interrupted command leaves the old figure or the new one
        fig.savefig(tmp, dpi=100)
    return path


MIN_MAP = 4  # a map under 4x4 says little about where a stage attends: its panel is a few blurred values
READABLE_MAP = 7  # the map size the advice aims at (the same floor as Grad-CAM's default layer)


def coarse_maps(shapes: dict[str, tuple[int, int]], input_size: Sequence[int]) -> dict[str, str]:
    """Stages whose map (h, w) at ``input_size`` is under MIN_MAP on a side, each with what to say:
    its size, and the input size whose map would be READABLE_MAP (the stage's stride times 7)."""
    out = {}
    for stage, (h, w) in shapes.items():
        if min(h, w) < MIN_MAP:
            sh, sw = -(-input_size[0] // h), -(-input_size[1] // w)  # the stage's stride, rounded up
            out[stage] = (
                f"{stage}: its map is {h}x{w} at a {input_size[0]}x{input_size[1]} input, too coarse to show "
                f"where it attends (under {MIN_MAP}x{MIN_MAP}); a {READABLE_MAP * sh}x{READABLE_MAP * sw} input "
                f"gives {READABLE_MAP}x{READABLE_MAP} (an export trained at that size, e.g. a space with "
                f"input_size: {READABLE_MAP * sh})"
            )
    return out


def figure_stems(images: Sequence[Path]) -> list[str]:
    """A distinct file stem per image: its own stem, with -2, -3, ... added where it is taken."""
    stems: list[str] = []
    for p in images:
        stem, n = p.stem, 1
        while stem in stems:
            n += 1
            stem = f"{p.stem}-{n}"
        stems.append(stem)
    return stems


def figures(
    model: nn.Module,
    files: Sequence[Path],
    folder: Path,
    *,
    in_chans: int,
    input_size: Sequence[int],
    imagenet: bool,
    layer: str | None = None,
    batch_size: int = 100,
    warn: Callable[[str], None] = lambda _: None,
) -> Iterator[tuple[Path, int, list[Path]]]:
    """For each image file: ``<stem>.png`` with every stage's attention and Grad-CAM of the predicted
    class, ``<stem>_<stage>.png`` per stage and ``<stem>_gradcam.png``, written to ``folder``. Yields
    (image file, predicted class, PNGs written) as it goes. ``imagenet``: see ``load_image``. Stages
    whose maps are too coarse to read are told to ``warn`` once (``coarse_maps``) and their panels
    say so."""
    device = next(model.parameters()).device
    mechanisms = stage_mechanisms(model)
    stems = figure_stems(files)
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        shown = torch.stack([load_image(p, in_chans, input_size, imagenet) for p in batch])
        x = (imagenet_normalise(shown) if imagenet else shown).to(device)
        layer = layer or cam_layer(model, x)
        with _eval_mode(model), torch.no_grad(), AttentionRecorder(model) as rec:
            predicted = model(x).argmax(1).cpu()
        maps = rec.maps()
        coarse = coarse_maps({k: (m.shape[-2], m.shape[-1]) for k, m in maps.items()}, input_size)
        if start == 0:
            for message in coarse.values():
                warn(message)
        cams = grad_cam(model, x, layer, predicted)
        cam_label = f"Grad-CAM {layer} ({cams.shape[-2]}x{cams.shape[-1]})"
        for i, (path, stem) in enumerate(zip(batch, stems[start : start + batch_size], strict=True)):
            panels = {
                stage: (
                    f"{stage} {mechanisms[stage]} ({m.shape[-2]}x{m.shape[-1]}"
                    + (", too coarse)" if stage in coarse else ")"),
                    m[i],
                )
                for stage, m in maps.items()
            }
            title = f"{path.name}: predicted class {int(predicted[i])}"
            written = [save_figure(shown[i], dict(panels.values()), cams[i], folder / f"{stem}.png", title, cam_label)]
            written += [
                save_figure(shown[i], {label: m}, None, folder / f"{stem}_{stage}.png", title)
                for stage, (label, m) in panels.items()
            ]
            written.append(save_figure(shown[i], {}, cams[i], folder / f"{stem}_gradcam.png", title, cam_label))
            yield path, int(predicted[i]), written


def write_digits(split: DigitsSplit, count: int, folder: Path) -> list[Path]:
    """The first ``count`` images of ``split`` as 8-bit grey PNGs ``digit<i>_label<y>.png``."""
    from PIL import Image

    if count > len(split.images):
        raise UserError(f"--digits {count}: the test split has {len(split.images)} images")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = (split.images[i, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        path = folder / f"digit{i}_label{int(split.labels[i])}.png"
        Image.fromarray(pixels).save(path)  # uint8 (H, W): 8-bit grey
        paths.append(path)
    return paths


def imagenet_input(card: ModelCard) -> bool:
    """Whether a model described by ``card`` (an export's or a trial's) was trained on ImageNet-normalised
    inputs (ImageFolder, CIFAR) rather than the raw [0, 1] embedded digits. Without a ``data`` section,
    the one-channel models are taken for digits models (the only one-channel source)."""
    source = card.data.get("source")
    return source != "digits" if source else card.in_chans != 1


def digits_test_split(card: ModelCard) -> DigitsSplit:
    """The embedded digits test split a model described by ``card`` was evaluated on: canvas = its input
    size, the other options from its ``data`` section where present. UserError for other models."""
    from nas.tasks.classify.data import digits_splits

    data = dict(card.data)
    (h, w), in_chans = card.input_size, card.in_chans
    if data.get("source", "digits") != "digits" or in_chans != 1 or h != w:
        trained = f", trained on {data['source']}" if data.get("source") else ""
        raise UserError(
            f"--eval needs a model trained on the embedded digits data (1 input channel, square "
            f"input); this one takes {in_chans} channel(s) at {h}x{w}{trained}"
        )
    options = {k: data[k] for k in ("clutter", "noise", "seed", "test") if k in data}
    return digits_splits(canvas=h, train=0, val=0, **options)["test"]


# -- what nas viz does, before it draws -------------------------------------------------------------------


@dataclass(frozen=True)
class VizJob:
    """What ``nas viz`` draws: the model and its card, the output folder (checked), the image files, and
    the embedded digits test split for the pointing game (None without ``--eval``)."""

    model: nn.Module
    card: ModelCard
    out: Path
    files: list[Path]
    split: DigitsSplit | None


def prepare(
    export_dir: Path | None,
    study: str | None,
    trial: int | None,
    storage: str | None,
    artifacts: str | None,
    images: Sequence[Path],
    digits: int,
    out: Path | None,
    evaluate: bool,
    batch_size: int,
    force: bool,
) -> VizJob:
    """The options of ``nas viz`` checked, the model loaded, the output folder checked before anything is
    written, and the digits asked for written as PNGs into ``out/inputs``."""
    from nas.core.errors import BadOption, check_range
    from nas.core.names import check_out

    if not images and not evaluate and not digits:
        raise BadOption("nas viz", "", "give --images PATH (repeatable), --digits N and/or --eval")
    check_range("--batch-size", batch_size, 1, 4096)
    check_range("--digits", digits, 0, 10_000, "a number of images")
    files = image_files(images)
    model, card, default_out = _load(export_dir, study, trial, storage, artifacts)
    out = check_out(out or default_out, inputs=[*images, *files], force=force, ours=_only_pngs)
    split = digits_test_split(card) if evaluate or digits else None  # refuse a non-digits model first
    if digits:
        files += write_digits(split, digits, out / "inputs")
    return VizJob(model, card, out, files, split if evaluate else None)


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


def _only_pngs(folder: Path) -> bool:
    """A folder of nas viz's own output (PNGs only): written again, as asked."""
    return all(p.suffix.lower() == ".png" for p in folder.rglob("*") if p.is_file())
