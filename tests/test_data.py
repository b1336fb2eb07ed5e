"""The data modules: the embedded digits task and user image folders."""

import numpy as np
import pytest
import torch
from PIL import Image

from nas.tasks.classify.data import DataError, DigitsDataModule, ImageFolderDataModule, datamodule, digits_splits


def test_digits_are_deterministic_disjoint_and_boxed():
    a = digits_splits(canvas=32, train=200, val=100, test=100, clutter=2, noise=0.1, seed=3)
    b = digits_splits(canvas=32, train=200, val=100, test=100, clutter=2, noise=0.1, seed=3)
    c = digits_splits(canvas=32, train=200, val=100, test=100, clutter=2, noise=0.1, seed=4)
    assert all(torch.equal(a[k].images, b[k].images) and torch.equal(a[k].labels, b[k].labels) for k in a)
    assert not torch.equal(a["train"].images, c["train"].images)
    x = a["train"].images
    assert x.shape == (200, 1, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert set(a["train"].labels.tolist()) == set(range(10))
    # the recorded box holds the digit: without noise and clutter all ink is inside it
    clean = digits_splits(canvas=40, train=50, val=10, test=10, clutter=0, noise=0.0, seed=0)["train"]
    for img, (x0, y0, x1, y1) in zip(clean.images[:, 0], clean.boxes.tolist(), strict=True):
        assert x1 - x0 == 16 and y1 - y0 == 16
        inside = img[y0:y1, x0:x1].sum()
        assert inside > 0 and torch.isclose(inside, img.sum())
    # clutter never overlaps the digit's box: the box content equals the clean digit's
    cl = digits_splits(canvas=40, train=50, val=10, test=10, clutter=3, noise=0.0, seed=0)["train"]
    assert torch.equal(cl.boxes, clean.boxes)
    for i in range(50):
        x0, y0, x1, y1 = clean.boxes[i].tolist()
        assert torch.equal(cl.images[i, 0, y0:y1, x0:x1], clean.images[i, 0, y0:y1, x0:x1])
        assert cl.images[i].sum() > clean.images[i].sum(), "clutter adds ink outside the box"


def test_source_digits_of_train_and_val_do_not_overlap():
    from nas.tasks.classify.data import _upscaled_digits

    images, _ = _upscaled_digits()
    s = digits_splits(canvas=18, train=300, val=300, test=10, clutter=0, noise=0.0, seed=0)

    def sources(split):
        out = set()
        for img, (x0, y0, x1, y1) in zip(split.images[:, 0], split.boxes.tolist(), strict=True):
            crop = img[y0:y1, x0:x1].numpy()
            out.add(int(np.argmin(((images - crop) ** 2).sum((1, 2)))))
        return out

    assert not sources(s["train"]) & sources(s["val"])


def test_resampled_training_canvases_are_new_every_epoch_from_the_training_digits_only(tmp_path, monkeypatch):
    """``resample: true``: every (seed, epoch) draws new canvases of the same training digits (not one of
    validation's), the same for the same pair; validation stays fixed; a fit reloads them every epoch;
    a second fit from the same seed (the next trial) sees the same canvases without drawing them again."""
    from nas.core.architecture import Architecture
    from nas.tasks.classify import data as data_module
    from nas.tasks.classify.data import _digit_sources, _upscaled_digits, resampled_train
    from nas.tasks.classify.fit import prepare_fit
    from nas.tasks.spacefile import load_space

    from _helpers import space_file

    opts = {"canvas": 18, "train": 200, "val": 100, "test": 10, "clutter": 0, "noise": 0.0, "seed": 0}
    fixed = digits_splits(**opts)
    e0, e0_again, e1 = resampled_train(opts, 7, 0), resampled_train(opts, 7, 0), resampled_train(opts, 7, 1)
    assert torch.equal(e0.images, e0_again.images) and torch.equal(e0.labels, e0_again.labels)
    assert not torch.equal(e0.images, e1.images) and not torch.equal(e0.images, resampled_train(opts, 8, 0).images)
    images, _ = _upscaled_digits()

    def sources(split):
        return {
            int(np.argmin(((images - img[y0:y1, x0:x1].numpy()) ** 2).sum((1, 2))))
            for img, (x0, y0, x1, y1) in zip(split.images[:, 0], split.boxes.tolist(), strict=True)
        }

    drawn = sources(e0) | sources(e1)
    assert drawn <= set(_digit_sources(opts)[3]["train"].tolist()) and not drawn & sources(fixed["val"])

    space = load_space(space_file(tmp_path, data={"train": 64, "val": 32, "resample": True}))
    digits = {k: v for k, v in space.data.as_dict().items() if k not in ("source", "num_workers")}
    dm = datamodule(space.data, (32, 32), 32, seed=0)
    seen, loader = [], dm.train_dataloader

    def recording():
        out = loader()
        seen.append(out.dataset.tensors[0].clone())
        return out

    dm.train_dataloader = recording
    monkeypatch.setattr(data_module, "_RESAMPLED", type(data_module._RESAMPLED)())
    draws = []
    monkeypatch.setattr(data_module, "resampled_train", lambda o, *at: draws.append(at) or resampled_train(o, *at))
    prepare_fit(Architecture.parse("resnet10t|none|none|none|none"), 5, dm, space.training, 10, 1, epochs=2).run()
    assert len(seen) == 2 and torch.equal(seen[1], resampled_train(digits, 5, 1).images), "new canvases each epoch"
    assert not torch.equal(seen[0], seen[1])
    assert torch.equal(dm.val_set.tensors[0], digits_splits(**digits)["val"].images), "validation stays fixed"
    prepare_fit(Architecture.parse("resnet10t|none|none|none|se(r=4)"), 5, dm, space.training, 10, 1, epochs=2).run()
    assert all(torch.equal(a, b) for a, b in zip(seen[:2], seen[2:], strict=True)), "the same canvases per seed"
    assert draws == [(5, 0), (5, 1)], "each epoch's canvases drawn once for both fits"


def test_resampled_canvases_kept_for_the_next_trial_are_bounded_in_bytes(monkeypatch):
    """The epochs kept for the next trial stay under RESAMPLED_BYTES, the oldest dropped first, so a
    large ``train`` cannot fill the memory; the epoch just drawn is always kept."""
    from collections import OrderedDict

    from nas.tasks.classify import data as data_module

    monkeypatch.setattr(data_module, "_RESAMPLED", OrderedDict())
    opts = {"canvas": 18, "train": 40, "val": 10, "test": 10, "clutter": 0, "noise": 0.0, "seed": 0}
    size = data_module._cached_resample(opts, 0, 0).images.nbytes
    monkeypatch.setattr(data_module, "RESAMPLED_BYTES", 2 * size)
    drawn = [data_module._cached_resample(opts, 0, e) for e in range(4)]
    assert [key[2] for key in data_module._RESAMPLED] == [2, 3]
    assert data_module._cached_resample(opts, 0, 3) is drawn[3], "a kept epoch is not drawn again"
    monkeypatch.setattr(data_module, "RESAMPLED_BYTES", 0)
    assert data_module._cached_resample(opts, 0, 5) is next(iter(data_module._RESAMPLED.values()))
    assert len(data_module._RESAMPLED) == 1, "the epoch just drawn is kept even over the bound"


def test_digits_datamodule_batches_and_checks_the_input_size():
    dm = datamodule(
        {
            "source": "digits",
            "canvas": 32,
            "train": 64,
            "val": 32,
            "test": 16,
            "clutter": 1,
            "noise": 0.1,
            "seed": 0,
            "num_workers": 0,
        },
        (32, 32),
        16,
        seed=0,
    )
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.int64
    assert isinstance(dm, DigitsDataModule) and dm.num_classes == 10
    first = [b[1].tolist() for b in dm.train_dataloader()]
    assert first == [b[1].tolist() for b in dm.train_dataloader()], "seeded, deterministic order"
    # a batch is taken with one index per tensor: the same batches as torch's item-by-item loader
    plain = torch.utils.data.TensorDataset(*dm.train_set.tensors)
    gen = torch.Generator().manual_seed(dm.shuffle_seed)
    for (x1, y1), (x2, y2) in zip(
        dm.train_dataloader(), torch.utils.data.DataLoader(plain, 16, shuffle=True, generator=gen), strict=True
    ):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # validation and test: every image once, in order, in batches of 4 training batches (fewer per-batch costs)
    for loader, split in ((dm.val_dataloader(), dm.val_set), (dm.test_dataloader(), dm.test_set)):
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [min(64, len(split))] * (len(split) // 64) + (
            [len(split) % 64] if len(split) % 64 else []
        )
        assert torch.equal(torch.cat([b[0] for b in batches]), split.tensors[0])
    # evaluating draws nothing from the global generator: training (augmentation, dropout) after a
    # validation is what it would be without one (a confirmation validates after its last epoch only)
    state = torch.get_rng_state()
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        list(loader)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(DataError, match="must equal data.canvas"):
        datamodule(
            {
                "source": "digits",
                "canvas": 32,
                "train": 8,
                "val": 8,
                "test": 8,
                "clutter": 0,
                "noise": 0.0,
                "seed": 0,
                "num_workers": 0,
            },
            (64, 64),
            16,
            seed=0,
        )


def _folder(root, broken=False):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.random.randint(0, 255, (20, 24, 3), np.uint8)).save(d / f"{i}.png")
    if broken:
        (root / "train" / "dog" / "broken.png").write_bytes(b"not an image at all")
    return root


def test_image_folder_reads_train_val_and_names_unreadable_files(tmp_path):
    root = _folder(tmp_path / "imgs", broken=True)
    dm = ImageFolderDataModule(str(root), (32, 32), batch_size=4, on_error="raise")
    with pytest.raises(DataError, match=r"unreadable image .*broken\.png"):
        dm.setup("fit")
    dm = ImageFolderDataModule(str(root), (32, 32), batch_size=4, on_error="skip")
    dm.setup("fit")
    assert dm.num_classes == 2 and len(dm.train_set) == 6 and dm.train_set.skipped[0].endswith("broken.png")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32)
    state = torch.get_rng_state()
    list(dm.val_dataloader())
    assert torch.equal(torch.get_rng_state(), state), "validating draws nothing from the global generator"


def test_image_folder_without_val_is_split(tmp_path):
    root = _folder(tmp_path / "imgs") / "train"
    dm = ImageFolderDataModule(str(root), (32, 32), batch_size=2, val_split=0.5)
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 3
    with pytest.raises(DataError, match="is not a folder"):
        ImageFolderDataModule(str(tmp_path / "nope"), (32, 32)).setup("fit")
