"""Data: the IDX reader against hand-built files, the search order, the real Fashion-MNIST, transforms."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import vitlens
from vitlens.data import SyntheticDataset, build_dataset, build_transform, read_idx
from vitlens.data import fashion_mnist as fm


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    """An IDX file by the format's definition: magic 0 0 0x08 ndim, big-endian uint32 sizes, uint8 data."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


def _fake_fashion(directory, n: int, value: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("t10k", n)):
        _write_idx(directory / f"{split}-images-idx3-ubyte.gz", np.full((count, 28, 28), value), compress=True)
        _write_idx(directory / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10, compress=True)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_matches_hand_built_file(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, (5, 3, 4))
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    _write_idx(path, array, compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_rejects_bad_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "ok", np.zeros((4, 2)), compress=False)
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")


def test_search_order_data_dir_then_env_then_system(tmp_path, monkeypatch):
    _fake_fashion(tmp_path / "given", 3, value=1)
    _fake_fashion(tmp_path / "env" / "fashion-mnist", 4, value=2)  # the usual sub-folder is searched too
    monkeypatch.setenv("VITLENS_DATA", str(tmp_path / "env"))
    assert len(fm.FashionMNIST("train", data_dir=tmp_path / "given")) == 3
    assert len(fm.FashionMNIST("train")) == 4
    monkeypatch.delenv("VITLENS_DATA")
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setattr(fm, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="apt install dataset-fashion-mnist"):
        fm.FashionMNIST("test", download=False)


def test_real_fashion_mnist_and_its_statistics():
    train, test = fm.FashionMNIST("train"), fm.FashionMNIST("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(test.targets).tolist() == [1000] * 10
    pixels = train.images / 255.0
    assert pixels.mean() == pytest.approx(fm.MEAN[0], abs=1e-4)
    assert pixels.std() == pytest.approx(fm.STD[0], abs=1e-4)
    image, label = test[0]
    assert image.size == (28, 28) and image.mode == "L" and label == 9  # the first test item is an ankle boot


def test_eval_transform_is_plain_normalisation_and_resize():
    config = dict(input_size=(1, 28, 28), mean=(0.25,), std=(0.5,), interpolation="bicubic")
    pixels = np.random.default_rng(1).integers(0, 256, (28, 28)).astype(np.uint8)
    out = build_transform(config, "fashion_mnist", train=False)(Image.fromarray(pixels))
    torch.testing.assert_close(out[0], (torch.from_numpy(pixels).float() / 255 - 0.25) / 0.5)
    big = build_transform(dict(config, input_size=(1, 56, 56)), "fashion_mnist", train=True,
                          augment=dict(crop_padding=2, hflip=True, rand_augment="rand-m9-mstd0.5", random_erasing=0.5))
    assert big(Image.fromarray(pixels)).shape == (1, 56, 56)


def test_synthetic_dataset_is_deterministic_and_subsets_work():
    a, b = SyntheticDataset(16, seed=3), SyntheticDataset(16, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert len(build_dataset("fashion_mnist", "test", subset=100)) == 100
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("mnist-ish", "train")


def test_load_tensors_are_the_idx_pixels_in_zero_one():
    images, labels = fm.load_tensors("test", 5)
    raw = read_idx(fm.locate("test")[0])[:5]
    assert images.shape == (5, 1, 28, 28) and images.dtype == torch.float32
    np.testing.assert_array_equal((images[:, 0] * 255).round().byte().numpy(), raw)
    assert labels.tolist()[0] == 9 and len(labels) == 5


def test_class_names_follow_the_models_outputs():
    import timm

    from vitlens.data import class_names, knows_only_fashion_mnist

    fashion = vitlens.create_model("vit_ti16", img_size=28, patch_size=7, in_chans=1, num_classes=10, depth=1)
    assert class_names(fashion)[9] == "Ankle boot" and knows_only_fashion_mnist(fashion)
    rgb10 = vitlens.create_model("vit_ti16", img_size=32, patch_size=8, num_classes=10, depth=1)
    assert class_names(rgb10) == [f"class {i}" for i in range(10)] and not knows_only_fashion_mnist(rgb10)
    imagenet = vitlens.from_timm(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    names = class_names(imagenet)
    assert len(names) == 1000 and names[0].startswith("tench") and "goldfish" in names[1]
