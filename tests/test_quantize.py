"""int8: quantize_onnx, export-onnx --quantize int8, bench int8, the mnist32 dataset.

One tiny STNNet is trained for a few seconds on real digits (the embedded
sample) and exported and quantized once for the whole module. Nothing here
asserts a speed: timings are replaced by given measurements where the
outcome depends on them.
"""
import json
import os

import numpy as np
import pytest

from stn_gluon.cli import main
from stn_gluon._runtime.errors import StnGluonError

# int8 against fp32 on 500 embedded test digits (a model trained for seconds: 77 % accurate, many digits uncertain):
#: the same class on every digit fp32 gives at least this probability,
SURE = 0.8
#: test accuracy within this many points of fp32's (measured: 77.2 % against 77.0 %),
ACCURACY_POINTS = 2.0
#: and theta and the warped images those of fp32 (the localization net, the grid and the sampler stay float)
GEOMETRY_DIFF = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample):
    """A save dir: STNNet trained 1 epoch on 1,024 real digits (a few seconds), with model.onnx exported."""
    from stn_gluon.data.mnist import DigitDataset
    from stn_gluon.export.onnx import export_onnx
    from stn_gluon.train.recipes import TrainConfig
    from stn_gluon.train.gluon import fit

    save = tmp_path_factory.mktemp("int8") / "run"
    data = DigitDataset(sample.train_images[:1024], sample.train_labels[:1024], sample.test_images[:200],
                        sample.test_labels[:200], source="test subset")
    cfg = TrainConfig.from_recipe("fast", epochs=1, save_dir=str(save), progress=False, lr=0.05)
    fit(cfg, dataset=data, echo=lambda line: None)
    export_onnx(str(save), save / "model.onnx")
    return save


@pytest.fixture(scope="module")
def calibration(sample):
    from stn_gluon.data.mnist import normalize

    return normalize(sample.train_images[:128])


@pytest.fixture(scope="module")
def int8_model(run, calibration):
    from stn_gluon.export.int8 import quantize_onnx

    out = run / "model-int8.onnx"
    assert quantize_onnx(run / "model.onnx", out, calibration) == str(out)
    return out


def test_quantized_model_is_int8_with_a_float_sampler_and_agrees_with_fp32(run, int8_model, sample):
    import onnx

    from stn_gluon.data.mnist import normalize
    from stn_gluon.export.onnx import OnnxModel
    from stn_gluon.export.int8 import float_ops

    model = onnx.load(str(int8_model))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"QLinearConv", "QuantizeLinear"} <= ops  # really quantized
    # the sampler and the grid read float: the geometry is computed exactly as in fp32
    floats = float_ops(int8_model)
    assert floats["GridSample"] == ["float32", "float32"]
    assert floats.get("AffineGrid", ["float32"])[0] == "float32"  # AffineGrid at opset 20; a MatMul below
    producers = {o: n for n in model.graph.node for o in n.output}
    grid = next(n for n in model.graph.node if n.op_type == "GridSample")
    # everything the grid is computed from (theta, the localization net) runs in float
    upstream, todo = {}, [grid.input[1]]
    while todo:
        node = producers.get(todo.pop())
        if node is not None and node.name not in upstream:
            upstream[node.name] = node.op_type
            todo.extend(node.input)
    assert {"AffineGrid", "MatMul"} & set(upstream.values())  # the grid really is built there
    quantized = ("QLinear", "QuantizeLinear", "DequantizeLinear", "QGemm", "ConvInteger", "MatMulInteger")
    assert not [op for op in upstream.values() if op.startswith(quantized)]

    fp32, int8 = OnnxModel(str(run / "model.onnx"), threads=1), OnnxModel(str(int8_model), threads=1)
    meta = dict(int8.meta)
    assert meta.pop("quantization").startswith("int8 (QOperator")
    assert meta == fp32.meta  # the same inputs, normalisation, classes, source weights
    x = normalize(sample.test_images[:500])
    a, b = fp32.run(x), int8.run(x)
    assert set(a) == set(b) == {"logits", "probabilities", "theta", "warped"}
    same = a["logits"].argmax(1) == b["logits"].argmax(1)
    sure = a["probabilities"].max(1) >= SURE
    # confident digits keep their class (two in a hundred may flip: ONNX Runtime releases round differently)
    assert sure.mean() > 0.3 and same[sure].mean() >= 0.98
    labels = sample.test_labels[:500]
    correct = [int((out["logits"].argmax(1) == labels).sum()) for out in (a, b)]  # counts: no float rounding
    assert abs(correct[0] - correct[1]) * 100 <= ACCURACY_POINTS * len(labels)
    assert np.abs(a["theta"] - b["theta"]).max() <= GEOMETRY_DIFF
    assert np.abs(a["warped"] - b["warped"]).max() <= GEOMETRY_DIFF


def test_calibration_from_the_training_data_by_default(run, tmp_path, mnist_dir):
    from stn_gluon.export.int8 import calibration_inputs, described_dataset

    assert described_dataset(run / "model.onnx") == described_dataset(run / "model") == "mnist"
    x = calibration_inputs(run / "model.onnx", count=50, data_dir=str(mnist_dir))
    assert x.shape == (50, 1, 28, 28) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.5  # normalised with the model's mean and std
    (tmp_path / "lone.onnx").write_bytes((run / "model.onnx").read_bytes())
    with pytest.raises(StnGluonError, match="names its training data"):
        calibration_inputs(tmp_path / "lone.onnx")


@pytest.mark.parametrize("case, expect", [
    ("missing", "file not found"),
    ("not_onnx", "not a readable ONNX model"),
    ("wrong_shape", r"expected inputs \(N, 1, 28, 28\)"),
    ("empty", "with N >= 1"),
    ("nan", "finite numbers"),
    ("strings", "finite numbers"),
    ("pickle", "not a .npy array"),
])
def test_quantize_onnx_refuses_bad_input(case, expect, run, tmp_path):
    from stn_gluon.export.int8 import quantize_onnx

    src, calib = run / "model.onnx", np.zeros((4, 1, 28, 28), np.float32)
    if case == "missing":
        src = tmp_path / "none.onnx"
    elif case == "not_onnx":
        src = tmp_path / "junk.onnx"
        src.write_bytes(b"\x08\x07junk" * 10)
    elif case == "wrong_shape":
        calib = np.zeros((4, 3, 32, 32), np.float32)
    elif case == "empty":
        calib = np.zeros((0, 1, 28, 28), np.float32)
    elif case == "nan":
        calib[0, 0, 0, 0] = np.nan
    elif case == "strings":
        calib = np.full((4, 1, 28, 28), "x")
    elif case == "pickle":
        calib = tmp_path / "objects.npy"
        np.save(calib, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(StnGluonError, match=expect) as err:
        quantize_onnx(src, tmp_path / "out.onnx", calib)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out.onnx").exists()


def _measured(ratio):
    return dict(fp32=1000.0, int8=1000.0 * ratio, ratio=ratio, cpu_ratio=ratio)


def test_verdict_refuses_int8_only_where_it_is_slower():
    from stn_gluon.export.int8 import int8_verdict

    assert int8_verdict(_measured(1.0)) is None and int8_verdict(_measured(1.9)) is None
    why = int8_verdict(_measured(0.7))
    assert "0.70x" in why and "\n" not in why


@pytest.fixture
def cli_run(run, tmp_path):
    """A copy of the run (its model files and description), so each CLI test writes its own exports."""
    out = tmp_path / "cli"
    out.mkdir()
    for name in ("model-symbol.json", "model-0000.params", "model.json"):
        (out / name).write_bytes((run / name).read_bytes())
    return out


@pytest.mark.parametrize("ratio, flags, written, said", [
    (1.3, [], True, "1.30x"),
    (0.7, [], False, "int8 refused: int8 runs at 0.70x"),
    (0.7, ["--int8-if-slower"], True, "warning: int8 runs at 0.70x"),
])
def test_export_quantize_flag(ratio, flags, written, said, cli_run, calibration, tmp_path, monkeypatch, capsys):
    import stn_gluon.export.int8 as quantize

    monkeypatch.setattr(quantize, "compare_speed", lambda *a, **k: _measured(ratio))  # no timing in tests
    np.save(tmp_path / "calib.npy", calibration[:64])
    rc = main(["export-onnx", "--model", str(cli_run), "--no-parity-check", "--quantize", "int8",
               "--calibration", str(tmp_path / "calib.npy"), *flags])
    out, err = capsys.readouterr()
    assert rc == (0 if written else 2)
    assert (cli_run / "model-int8.onnx").exists() == written
    assert (cli_run / "model.onnx").exists()
    assert said in out + err
    if not written:
        assert err.count("\n") == 1 and "--int8-if-slower" in err
    assert not [f for f in os.listdir(cli_run) if f.endswith(".tmp")]


@pytest.mark.parametrize("args, expect", [
    (["--quantize", "int9"], "invalid choice: 'int9'"),
    (["--quantize", "int8", "--calibration-count", "0"], "--calibration-count: must be >= 1"),
    (["--quantize", "int8", "--calibration", "missing.npy"], "--calibration missing.npy: not found"),
    (["--quantize", "int8", "--calibration", "WRONG"], "--calibration: expected inputs (N, 1, 28, 28)"),
])
def test_export_quantize_flag_errors_are_one_line(args, expect, cli_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "WRONG", np.zeros((2, 3, 32, 32), np.float32))
    args = [a.replace("WRONG", str(tmp_path / "WRONG.npy")) for a in args]
    try:
        rc = main(["export-onnx", "--model", str(cli_run), "--no-parity-check", *args])
    except SystemExit as exit:  # a flag argparse refuses
        rc = exit.code
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and err.count("\n") == 1, err
    assert not (cli_run / "model-int8.onnx").exists()


def test_bench_int8_reports_both_precisions(run, mnist_dir, tmp_path, monkeypatch):
    from stn_gluon.bench.int8 import Int8BenchConfig, run_int8_bench

    lines, payload = run_int8_bench(Int8BenchConfig(models=str(run), batches="1,4", seconds=0.01, repeats=1,
                                                    calibration_count=32, data_dir=str(mnist_dir),
                                                    out=str(tmp_path / "bench")), echo=lambda line: None)
    (result,) = payload["results"]
    assert set(result["accuracy"]) == {"fp32", "int8"} and set(result["speed"]) == {1, 4}
    assert abs(result["accuracy"]["fp32"] - result["accuracy"]["int8"]) <= 0.05
    text = (tmp_path / "bench" / "results.md").read_text()
    assert "int8 / fp32 (wall clock)" in text and "| 4 |" in text
    assert json.loads((tmp_path / "bench" / "results.json").read_text())["batches"] == [1, 4]


def test_mnist32_is_mnist_padded_in_three_channels(sample, tmp_path):
    from stn_gluon.data.mnist import DigitDataset
    from stn_gluon.data.distortions import load_dataset

    small = DigitDataset(sample.train_images[:20], sample.train_labels[:20], sample.test_images[:10],
                         sample.test_labels[:10], source="small")
    for _ in range(2):  # generated, then read from the cache
        data = load_dataset("mnist32", mnist=small, cache_dir=str(tmp_path))
        assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
        assert (data.train_images[:, 1] == data.train_images[:, 0]).all()
        np.testing.assert_array_equal(data.test_images[:, 2, 2:30, 2:30], small.test_images)
        assert data.test_images[:, :, :2].max() == 0 and data.test_images[:, :, :, 30:].max() == 0
        np.testing.assert_array_equal(data.test_labels, small.test_labels)


def _conv_net(path, in_channels, widths):
    """A float ONNX net: convolutions of ``widths`` output channels (3x3, ReLU) on (N, in_channels, 8, 8) input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    nodes, inits, x, c = [], [], "x", in_channels
    for i, width in enumerate(widths):
        inits += [numpy_helper.from_array(rng.normal(0, 0.3, (width, c, 3, 3)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, width).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, c = f"r{i}", width
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", in_channels, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", c, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("in_channels, widths, padded", [
    (3, (16, 16), True),   # 16 outputs suit ORT's symmetric int8 kernel: 3 input channels padded to 4, int8
    (3, (10, 16), False),  # 10 outputs do not: that thin convolution stays float, unpadded
])
def test_thin_convolutions_are_padded_to_four_channels_where_that_makes_them_int8(in_channels, widths, padded,
                                                                                  tmp_path):
    import onnx
    from onnx import numpy_helper

    from stn_gluon.export.onnx import cpu_session
    from stn_gluon.export.int8 import quantize_onnx

    _conv_net(tmp_path / "f.onnx", in_channels, widths)
    x = np.random.RandomState(1).uniform(-1, 1, (64, in_channels, 8, 8)).astype(np.float32)
    quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", x)
    model = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    first = next(n for n in model.graph.node if n.op_type in ("Conv", "QLinearConv"))
    assert first.op_type == ("QLinearConv" if padded else "Conv")
    weight = inits[first.input[3 if padded else 1]]
    assert weight.shape[1] == (4 if padded else in_channels)
    if padded:
        assert not weight[:, in_channels:].any()  # the added channels weigh nothing
        assert any(n.op_type == "Pad" for n in model.graph.node)
    ref = cpu_session(str(tmp_path / "f.onnx")).run(None, {"x": x})[0]
    got = cpu_session(str(tmp_path / "q.onnx")).run(None, {"x": x})[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()  # int8 rounding, not a different function
