"""Distorted-MNIST datasets: generators, determinism, caching, CLI, and the benchmark on a small subset."""
import csv
import json

import mxnet as mx
import numpy as np
import pytest

import stn_gluon as sg
from stn_gluon import distortions as D
from stn_gluon.data.mnist import DigitDataset, normalize
from stn_gluon._runtime.errors import DataError, StnGluonError
from test_cli import run_cli

CANVAS = {"rotated": 28, "rts": 42, "projective": 28, "elastic": 28, "cluttered": 60, "noisy128": 128}


@pytest.fixture(scope="module")
def tiny(sample):
    return DigitDataset(sample.train_images[:300], sample.train_labels[:300], sample.test_images[:100],
                        sample.test_labels[:100], source="tiny")


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_GLUON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("name", list(CANVAS))
def test_generators_are_deterministic_and_keep_labels(name, tiny):
    a = D.generate(name, tiny, seed=3)
    b = D.generate(name, tiny, seed=3)
    c = D.generate(name, tiny, seed=4)
    assert a.train_images.shape == (300, CANVAS[name], CANVAS[name]) and a.train_images.dtype == np.uint8
    assert a.test_images.shape == (100, CANVAS[name], CANVAS[name])
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert (a.train_images != c.train_images).any()
    np.testing.assert_array_equal(a.train_labels, tiny.train_labels)  # same digits, same order
    np.testing.assert_array_equal(a.test_labels, tiny.test_labels)
    # the digit is there: as much ink as the source, give or take the warp (noise/clutter only add)
    ink = a.test_images.astype(float).sum(axis=(1, 2)) / tiny.test_images.astype(float).sum(axis=(1, 2))
    assert np.median(ink) > 0.4


def test_rotation_by_90_degrees_is_a_quarter_turn(tiny):
    theta = D._placement_thetas(np.array([np.pi / 2]), np.ones(1), np.array([[13.5, 13.5]]), 28)
    out = D._warp(tiny.test_images[:1], theta, "affine", 28)[0]
    src = tiny.test_images[0]
    turned = [np.rot90(src, k) for k in (1, -1)]
    assert min(np.abs(out.astype(int) - t.astype(int)).max() for t in turned) <= 1


def test_placement_puts_the_digit_where_asked(tiny):
    theta = D._placement_thetas(np.zeros(1), np.ones(1), np.array([[13.5 + 9, 13.5 + 5]]), 42)
    out = D._warp(tiny.test_images[:1], theta, "affine", 42)[0]
    assert np.abs(out[5:33, 9:37].astype(int) - tiny.test_images[0].astype(int)).max() <= 1
    mask = np.ones_like(out, bool)
    mask[5:33, 9:37] = False
    assert out[mask].max() == 0


def test_homography_to_corners_maps_the_points():
    where = np.array([[-0.7, -0.8], [0.9, -0.6], [0.6, 0.8], [-0.8, 0.7]])
    h = np.append(D.homography_to_corners(where), 1.0).reshape(3, 3)
    for p, corner in zip(where, D._CORNERS):
        u, v, w = h @ [p[0], p[1], 1]
        np.testing.assert_allclose([u / w, v / w], corner, atol=1e-5)


@pytest.mark.slow
def test_noisy128_subsets_each_split(sample):
    made = D.generate("noisy128", sample, seed=0)
    assert len(made.train_labels) == 4000 and len(made.test_labels) == 1000  # under the 20,000 / 5,000 caps
    big = DigitDataset(np.concatenate([sample.train_images] * 6), np.concatenate([sample.train_labels] * 6),
                       sample.test_images[:10], sample.test_labels[:10], "x")
    assert len(D.generate("noisy128", big, seed=0).train_labels) == 20000


def test_load_dataset_caches_and_reports_a_corrupt_cache(tiny, cache, monkeypatch):
    first = D.load_dataset("rts", mnist=tiny)
    files = list(cache.glob("rts-seed0-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(D, "generate", lambda *a, **k: pytest.fail("regenerated despite the cache"))
    again = D.load_dataset("rts", mnist=tiny)
    np.testing.assert_array_equal(first.train_images, again.train_images)
    files[0].write_bytes(files[0].read_bytes()[:100])
    with pytest.raises(DataError, match=r"rts-seed0-.*unreadable dataset cache"):
        D.load_dataset("rts", mnist=tiny)
    np.savez(files[0], train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros(3, np.int32),
             test_images=np.zeros((1, 28, 28), np.uint8), test_labels=np.zeros(1, np.int32))
    with pytest.raises(DataError, match="not a rts dataset cache"):
        D.load_dataset("rts", mnist=tiny)
    with pytest.raises(StnGluonError, match="unknown dataset"):
        D.load_dataset("swirled", mnist=tiny)


def test_uint8_batches_equal_normalised_float_batches(tiny):
    pixels = tiny.test_images[:, None]
    a = list(sg.data.ArrayBatches(pixels, tiny.test_labels, 32))
    b = list(sg.data.ArrayBatches(normalize(pixels), tiny.test_labels, 32))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_allclose(xa.asnumpy(), xb.asnumpy(), atol=1e-6)
        np.testing.assert_array_equal(ya.asnumpy(), yb.asnumpy())


def test_baseline_on_a_big_canvas_sees_it_area_averaged():
    net = sg.STNNet(stn=False, input_shape=(1, 112, 112), target_shape=(28, 28))
    net.initialize(mx.init.Xavier())
    x = np.random.RandomState(0).rand(2, 1, 112, 112).astype(np.float32)
    pooled = x.reshape(2, 1, 28, 4, 28, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), net.classifier(mx.nd.array(pooled)).asnumpy(),
                               atol=1e-5)


def test_pooled_localization_net_keeps_parameter_names():
    plain = sg.STNNet(input_shape=(1, 28, 28), prefix="m_")
    pooled = sg.STNNet(input_shape=(1, 128, 128), target_shape=(28, 28), transform="attention", loc_pool=4,
                       prefix="m_")
    pooled.initialize(mx.init.Xavier())
    assert pooled(mx.nd.zeros((2, 1, 128, 128))).shape == (2, 10)
    names = {k for k in plain.collect_params() if "regressor" not in k}
    assert names == {k for k in pooled.collect_params() if "regressor" not in k}


def test_cli_trains_on_a_distorted_set_and_tools_follow_the_model(tmp_path, mnist_dir, cache, capsys):
    save = tmp_path / "rts"
    code, out, err = run_cli(capsys, "train", "--dataset", "rts", "--transform", "tps", "--epochs", "1",
                             "--data-dir", str(mnist_dir), "--save-dir", str(save), "--no-progress")
    assert code == 0, err
    meta = json.load(open(save / "model.json"))
    assert meta["dataset"] == "rts" and meta["input_shape"] == [1, 42, 42] and meta["transform"] == "tps"
    metrics = json.load(open(save / "metrics.json"))
    # evaluate and visualize read the model's dataset by default
    code, out, err = run_cli(capsys, "evaluate", "--model", str(save), "--data-dir", str(mnist_dir), "--json")
    assert code == 0, err
    assert json.loads(out)["test_correct"] == metrics["test_correct"]
    png = tmp_path / "v.png"
    code, _, err = run_cli(capsys, "visualize", "--model", str(save), "--data-dir", str(mnist_dir),
                           "--out", str(png), "--count", "8")
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG", err
    # a dataset of another size is a clear error
    code, _, err = run_cli(capsys, "evaluate", "--model", str(save), "--data-dir", str(mnist_dir),
                           "--dataset", "rotated")
    assert code == 2 and "expects input (1, 42, 42)" in err and "Traceback" not in err
    # and the model exports to ONNX with parity (checked by export-onnx itself)
    code, out, err = run_cli(capsys, "export-onnx", "--model", str(save))
    assert code == 0 and "Parity" in out, err


@pytest.mark.parametrize("args, expect", [
    (["train", "--dataset", "swirled"], "invalid choice: 'swirled'"),
    (["train", "--transform", "tps1"], "--transform 'tps1': choose one of affine"),
    (["train", "--target-size", "0"], "--target-size"),
    (["train", "--localization", "dense"], "--localization"),
    (["train", "--dataset", "rts", "--transform", "projective", "--localization", "saliency"],
     "outputs attention or affine parameters, not projective"),
    (["bench", "distortions", "--datasets", "rotated,swirled"], "swirled not in"),
    (["bench", "distortions", "--models", "cnn,bogus"], "bogus not in"),
])
def test_bad_flags_are_one_line_errors(args, expect, capsys, cache, mnist_dir):
    code, _, err = run_cli(capsys, *args, "--data-dir", str(mnist_dir))
    assert code == 2 and expect in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # argparse: usage + the error


def test_visualize_a_dataset_without_a_model(tmp_path, mnist_dir, cache, capsys):
    png = tmp_path / "cluttered.png"
    code, out, err = run_cli(capsys, "visualize", "--dataset", "cluttered", "--data-dir", str(mnist_dir),
                             "--out", str(png), "--count", "16")
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG", err


@pytest.mark.slow
def test_distortion_bench_runs_a_subset_resumes_and_writes_its_tables(tmp_path, mnist_dir, cache, capsys):
    out = tmp_path / "bench"
    args = ["bench", "distortions", "--datasets", "rotated", "--models", "cnn,affine,projective",
            "--epochs", "1", "--train-size", "256", "--test-size", "100", "--data-dir", str(mnist_dir),
            "--out", str(out)]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["dataset"], r["model"]) for r in rows] == [("rotated", "cnn"), ("rotated", "affine"),
                                                          ("rotated", "projective")]
    for r in rows:
        metrics = json.load(open(out / "rotated" / r["model"] / "metrics.json"))
        assert float(r["test_error_pct"]) == round(100 * (1 - metrics["test_accuracy"]), 2)
        assert r["epochs"] == "1" and r["train_size"] == "256"
    assert rows[1]["paper_error_pct"] == "0.7"
    md = (out / "results.md").read_text()
    assert "| rotated | affine |" in md and "paper: ST-CNN / CNN" in md
    assert (out / "rotated.png").read_bytes()[:4] == b"\x89PNG"
    # a second run reuses the finished runs instead of training again
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0 and stdout.count("done before") == 3, err


def test_dataset_sizes_apply_only_to_their_own_canvas():
    from stn_gluon.train.recipes import build_net as _build_net
    from stn_gluon.train.recipes import TrainConfig

    assert _build_net(TrainConfig(), (1, 60, 60), 10).config["target_shape"] == [60, 60]  # mnist spec, other data
    assert _build_net(TrainConfig(dataset="cluttered"), (1, 60, 60), 10).config["target_shape"] == [60, 60]
    assert _build_net(TrainConfig(dataset="rts"), (1, 42, 42), 10).config["target_shape"] == [28, 28]
    assert _build_net(TrainConfig(dataset="rts", model="lenet"), (1, 42, 42), 10).config["target_shape"] == [42, 42]
    assert _build_net(TrainConfig(target_size=20), (1, 28, 28), 10).config["target_shape"] == [20, 20]


def test_attention_and_affine_on_noisy128_use_the_saliency_localization_by_default():
    from stn_gluon.train.recipes import build_net as _build_net
    from stn_gluon.train.recipes import DATASET_MODELS, TrainConfig

    def loc_of(**kw):
        return type(_build_net(TrainConfig(dataset="noisy128", **kw), (1, 128, 128), 10).stn.localization).__name__

    assert loc_of(transform="attention") == "SaliencyLocalization"
    assert loc_of(transform="affine") == "SaliencyLocalization"
    assert loc_of(transform="tps") == "LocalizationNet"  # the saliency net outputs attention or affine parameters
    assert loc_of(transform="attention", localization="conv") == "LocalizationNet"
    with pytest.raises(StnGluonError, match="outputs attention or affine parameters, not projective"):
        loc_of(transform="projective", localization="saliency")
    with pytest.raises(StnGluonError, match="localization 'dense': choose conv, saliency"):
        TrainConfig(localization="dense").validate()
    with pytest.raises(StnGluonError, match="init_scale must be > 0"):
        TrainConfig(init_scale=-1.0).validate()
    with pytest.raises(StnGluonError, match="brightness_prior must be >= 0"):
        TrainConfig(brightness_prior=-2.0).validate()

    def prior_of(**kw):
        net = _build_net(TrainConfig(dataset="noisy128", transform="attention", **kw), (1, 128, 128), 10)
        return net.config["brightness_prior"]

    assert prior_of() == DATASET_MODELS["noisy128"].brightness_prior > 0  # the dataset's prior with its saliency net
    assert prior_of(brightness_prior=0.0) == 0.0
    assert prior_of(localization="conv") == 0.0  # a conv localization net has no prior to take
    with pytest.raises(StnGluonError, match="needs the saliency localization"):
        prior_of(localization="conv", brightness_prior=1.0)
    net = _build_net(TrainConfig(dataset="noisy128", transform="attention", init_scale=0.5), (1, 128, 128), 10)
    net.initialize()
    net.stn.return_theta = True
    _, theta = net.stn(mx.nd.zeros((2, 1, 128, 128)))
    np.testing.assert_allclose(theta.asnumpy(), [[0.5, 0, 0, 0, 0.5, 0]] * 2, atol=1e-6)  # starts zoomed 2x
