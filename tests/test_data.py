import gzip
import os

import numpy as np
import pytest

from conftest import write_idx
from stn_gluon.data import mnist as D
from stn_gluon._runtime.errors import DataError


def test_reads_gz_and_raw_idx(mnist_dir, sample, tmp_path):
    data = D.read_mnist_dir(str(mnist_dir))
    np.testing.assert_array_equal(data.train_images, sample.train_images[:600])
    np.testing.assert_array_equal(data.test_labels, sample.test_labels[:200])
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in os.listdir(mnist_dir):
        with gzip.open(mnist_dir / name) as src, open(raw / name[:-3], "wb") as dst:
            dst.write(src.read())
    data_raw = D.read_mnist_dir(str(raw))
    np.testing.assert_array_equal(data_raw.train_images, data.train_images)


def _corrupt(folder, name, payload):
    path = folder / name
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("case, message", [
    ("truncated_gzip", "not a readable gzip file"),
    ("truncated_data", "truncated"),
    ("trailing_bytes", "trailing bytes"),
    ("bad_magic", "bad IDX magic"),
    ("wrong_ndim", "expected a 3-d IDX array"),
    ("wrong_size", "MNIST's are 28x28"),
    ("count_mismatch", "labels"),
    ("label_range", "out of range"),
    ("empty", "truncated"),
])
def test_corrupt_files_give_one_line_errors_naming_the_file(mnist_dir, sample, case, message):
    images = "train-images-idx3-ubyte.gz"
    labels = "train-labels-idx1-ubyte.gz"
    good = (mnist_dir / images).read_bytes()
    raw = gzip.decompress(good)
    culprit = images
    if case == "truncated_gzip":
        _corrupt(mnist_dir, images, good[: len(good) // 2])
    elif case == "truncated_data":
        _corrupt(mnist_dir, images, gzip.compress(raw[:-100]))
    elif case == "trailing_bytes":
        _corrupt(mnist_dir, images, gzip.compress(raw + b"\0" * 10))
    elif case == "bad_magic":
        _corrupt(mnist_dir, images, gzip.compress(b"\x12\x34" + raw[2:]))
    elif case == "wrong_ndim":
        write_idx(mnist_dir / images, sample.train_images[:600].reshape(600, 784))
    elif case == "wrong_size":
        write_idx(mnist_dir / images, sample.train_images[:600, :27, :27])
    elif case == "count_mismatch":
        write_idx(mnist_dir / labels, sample.train_labels[:599])
    elif case == "label_range":
        bad = sample.train_labels[:600].copy()
        bad[5] = 11
        write_idx(mnist_dir / labels, bad)
        culprit = labels
    elif case == "empty":
        _corrupt(mnist_dir, images, b"")
    with pytest.raises(DataError) as info:
        D.read_mnist_dir(str(mnist_dir))
    text = str(info.value)
    assert message in text and culprit.replace(".gz", "") in text and "\n" not in text


def test_lookup_order(mnist_dir, tmp_path, monkeypatch, no_mnist_env):
    # explicit folder first
    assert D.find_mnist_dir(str(mnist_dir)) == str(mnist_dir)
    # then $STN_GLUON_DATA
    monkeypatch.setenv("STN_GLUON_DATA", str(mnist_dir))
    assert D.find_mnist_dir() == str(mnist_dir)
    # an explicit folder without the files is an error, not a silent fallback
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="lacks"):
        D.find_mnist_dir(str(empty))
    monkeypatch.setenv("STN_GLUON_DATA", str(empty))
    with pytest.raises(DataError, match="STN_GLUON_DATA"):
        D.find_mnist_dir()
    # then the MXNet cache
    monkeypatch.delenv("STN_GLUON_DATA")
    assert D.find_mnist_dir() is None
    cache = D.default_cache_dir()
    os.makedirs(os.path.dirname(cache))
    os.symlink(mnist_dir, cache)
    assert D.find_mnist_dir() == cache


@pytest.mark.slow
def test_embedded_fallback_is_real_and_loud(no_mnist_env, caplog):
    with caplog.at_level("WARNING"):
        data = D.load_mnist(download=False)
    assert "EMBEDDED SAMPLE" in caplog.text
    assert data.train_images.shape == (4000, 28, 28) and data.test_images.shape == (1000, 28, 28)
    assert np.bincount(data.test_labels).tolist() == [100] * 10
    # real digits: mostly background with bright strokes, not noise
    assert 0.1 < (data.train_images > 128).mean() < 0.25
    assert len(np.unique(data.train_images)) > 100


def test_array_batches_shuffle_is_reproducible_and_complete():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    b = D.ArrayBatches(x, y, 4, shuffle=True, seed=1, last_batch="discard")
    assert len(b) == 2 and b.num_samples == 8
    first = [lbl.asnumpy().tolist() for _, lbl in b]
    again = [lbl.asnumpy().tolist() for _, lbl in b]
    assert first == again
    b.set_epoch(1)
    assert [lbl.asnumpy().tolist() for _, lbl in b] != first
    keep = D.ArrayBatches(x, y, 4, last_batch="keep")
    got = np.concatenate([lbl.asnumpy() for _, lbl in keep])
    np.testing.assert_array_equal(got, y)
    for data, lbl in keep:
        np.testing.assert_array_equal(data.asnumpy().ravel(), lbl.asnumpy())


def test_normalize():
    x = D.normalize(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [(0 - D.MNIST_MEAN) / D.MNIST_STD, (1 - D.MNIST_MEAN) / D.MNIST_STD],
                               rtol=1e-6)
