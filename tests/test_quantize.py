"""int8: quantize_onnx, export-onnx --quantize int8, bench int8, the mnist32 dataset.

One tiny STNNet is trained for a few seconds on real digits (the embedded
sample) and exported and quantized once for the whole module. Nothing here
asserts a speed: timings are replaced by given measurements where the
outcome depends on them. Every test holds on any x86-64 CPU (AVX2 alone,
AVX-512, VNNI, AMX), except those whose names say which CPU they need; they
skip elsewhere, saying why.
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
    assert meta.pop("int8_target") == "any"  # right on every x86 CPU: 7-bit weights
    assert int8.warning is None
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

    from stn_gluon.export.int8 import describe_cpu

    monkeypatch.setattr(quantize, "compare_speed", lambda *a, **k: _measured(ratio))  # no timing in tests
    np.save(tmp_path / "calib.npy", calibration)
    rc = main(["export-onnx", "--model", str(cli_run), "--no-parity-check", "--quantize", "int8",
               "--calibration", str(tmp_path / "calib.npy"), *flags])
    out, err = capsys.readouterr()
    assert rc == (0 if written else 2), out + err
    assert (cli_run / "model-int8.onnx").exists() == written
    assert (cli_run / "model.onnx").exists()
    assert said in out + err
    # checked against fp32 first, on the calibration inputs held back (the last quarter), naming this CPU
    assert f"int8 against fp32 on {len(calibration) // 4} held-back calibration inputs" in out
    assert f"CPU {describe_cpu()}" in out
    if not written:
        assert err.count("\n") == 1 and "--int8-if-slower" in err
    assert not [f for f in os.listdir(cli_run) if f.endswith(".tmp")]


def _agreement(error, fp32_accuracy=None, int8_accuracy=None):
    out = dict(top1_agreement=1.0, max_logit_diff=error, max_relative_error=error, count=64.0)
    if fp32_accuracy is not None:
        out.update(fp32_accuracy=fp32_accuracy, int8_accuracy=int8_accuracy)
    return out


def test_error_verdict_refuses_int8_beyond_either_bound():
    from stn_gluon.export.int8 import MAX_ERROR, int8_error_verdict

    assert int8_error_verdict(_agreement(MAX_ERROR)) is None
    assert int8_error_verdict(_agreement(0.01, 0.99, 0.98)) is None  # one point lower: the bound itself
    why = int8_error_verdict(_agreement(0.21))
    assert "21.0 %" in why and f"bound {100 * MAX_ERROR:g} %" in why and "\n" not in why
    why = int8_error_verdict(_agreement(0.01, 0.99, 0.95))
    assert "95.00 % against fp32's 99.00 %" in why and "4.00 points lower" in why
    assert int8_error_verdict(_agreement(0.3), max_error=0.5) is None


@pytest.mark.parametrize("target, vnni, said", [
    ("any", False, "int8's largest logit error on 64 held-back inputs is 30.0 %"),
    ("vnni", False, "--int8-target vnni needs a CPU with VNNI; this one has none"),
    ("vnni", True, "int8's largest logit error"),
])
def test_export_refuses_int8_that_disagrees_with_fp32(target, vnni, said, cli_run, calibration, tmp_path,
                                                      monkeypatch, capsys):
    import stn_gluon.export.int8 as quantize

    monkeypatch.setattr(quantize, "agreement", lambda *a, **k: _agreement(0.3))  # as saturated sums measure
    monkeypatch.setattr(quantize, "cpu_int8_features",
                        lambda: dict(model="Test CPU", flags=["avx2"] + ["avx512_vnni"] * vnni, vnni=vnni))
    monkeypatch.setattr(quantize, "compare_speed", lambda *a, **k: pytest.fail("timed after a refusal"))
    np.save(tmp_path / "calib.npy", calibration)
    rc = main(["export-onnx", "--model", str(cli_run), "--no-parity-check", "--quantize", "int8",
               "--calibration", str(tmp_path / "calib.npy"), "--int8-target", target])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: int8 refused: ") and said in err, err
    assert ("this one has none" in err) == (target == "vnni" and not vnni)
    assert "CPU Test CPU (avx2" in out
    assert not (cli_run / "model-int8.onnx").exists() and (cli_run / "model.onnx").exists()
    assert not [f for f in os.listdir(cli_run) if f.endswith(".tmp")]


def test_export_int8_target_vnni_is_recorded_and_named_as_a_risk(cli_run, calibration, tmp_path, monkeypatch,
                                                                 capsys):
    import onnx

    import stn_gluon.export.int8 as quantize

    monkeypatch.setattr(quantize, "compare_speed", lambda *a, **k: _measured(1.2))
    monkeypatch.setattr(quantize, "agreement", lambda *a, **k: _agreement(0.01))  # whatever this CPU's kernels do
    np.save(tmp_path / "calib.npy", calibration)
    rc = main(["export-onnx", "--model", str(cli_run), "--no-parity-check", "--quantize", "int8",
               "--calibration", str(tmp_path / "calib.npy"), "--int8-target", "vnni"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    meta = {p.key: p.value for p in onnx.load(str(cli_run / "model-int8.onnx")).metadata_props}
    assert meta["int8_target"] == "vnni" and "CPUs with VNNI or AMX only" in meta["quantization"]
    assert "reduce_range" not in meta["quantization"]
    (warning,) = [line for line in out.splitlines() if line.startswith("warning: --int8-target vnni")]
    assert "saturate" in warning
    # full 8-bit weights: the largest |weight| of a channel is 127, not 64 as by default
    weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(cli_run / "model-int8.onnx")).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 127


@pytest.mark.parametrize("args, expect", [
    (["--quantize", "int9"], "invalid choice: 'int9'"),
    (["--quantize", "int8", "--int8-target", "avx"], "invalid choice: 'avx'"),
    (["--quantize", "int8", "--check-count", "0"], "--check-count: must be >= 1"),
    (["--quantize", "int8", "--int8-max-error", "-1"], "--int8-max-error must be >= 0, got -1"),
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
    from stn_gluon.export.int8 import cpu_int8_features, describe_cpu

    lines, payload = run_int8_bench(Int8BenchConfig(models=str(run), batches="1,4", seconds=0.01, repeats=1,
                                                    calibration_count=32, data_dir=str(mnist_dir),
                                                    out=str(tmp_path / "bench")), echo=lambda line: None)
    (result,) = payload["results"]
    assert set(result["accuracy"]) == {"fp32", "int8"} and set(result["speed"]) == {1, 4}
    assert abs(result["accuracy"]["fp32"] - result["accuracy"]["int8"]) <= 0.05
    assert 0 <= result["max_relative_error"] <= 0.5 and result["held_back"]["count"] > 0
    assert result["int8_target"] == "any"
    text = (tmp_path / "bench" / "results.md").read_text()
    assert "int8 / fp32 (wall clock)" in text and "| 4 |" in text
    assert text.startswith(f"CPU: {describe_cpu()}")  # speed and error belong to the CPU they were measured on
    assert payload["cpu"] == cpu_int8_features()
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


def _worst_case_net(path, kind, in_channels, width):
    """A float ONNX net whose int8 form has every product at its largest: weights all of one magnitude (each
    quantizes to the extreme of its range), inputs at the top of their calibrated range (uint8 255).

    kind: ``conv`` (3x3, on (N, in_channels, 8, 8)) or ``dense`` (Flatten -> Gemm); ReLU after.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sign = np.where(np.arange(width) % 2, -1.0, 1.0).astype(np.float32)  # half the channels negative: ReLU'd
    if kind == "conv":
        w = np.ones((width, in_channels, 3, 3), np.float32) * sign[:, None, None, None] * 0.1
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
        out = ["N", width, 8, 8]
    else:
        w = np.ones((in_channels * 64, width), np.float32) * sign[None, :] * 0.01
        nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["c"])]
        out = ["N", width]
    nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    graph = helper.make_graph(nodes, "worst", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", in_channels, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(width, np.float32),
                                                                                        "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


#: The int8 kernel families ONNX Runtime's CPU provider runs these nets in: (kind, input channels, width, int8 op).
KERNEL_FAMILIES = {
    "symmetric_conv": ("conv", 4, 16, "QLinearConv"),          # MLAS ConvSym: channels a multiple of 4, 16+ outputs
    "symmetric_conv_padded": ("conv", 3, 16, "QLinearConv"),   # the same after padding 3 channels to 4
    "gemm_conv": ("conv", 4, 12, "QLinearConv"),               # im2col + U8S8 QGEMM: 12 outputs miss ConvSym
    "dense": ("dense", 4, 16, "QGemm"),                        # U8S8 QGEMM
}


def _worst_case_error(tmp_path, family, settings):
    from stn_gluon.export.onnx import cpu_session
    from stn_gluon.export.int8 import quantize_onnx
    import onnx

    kind, in_channels, width, op = KERNEL_FAMILIES[family]
    _worst_case_net(tmp_path / "f.onnx", kind, in_channels, width)
    x = np.random.RandomState(1).uniform(0, 1, (64, in_channels, 8, 8)).astype(np.float32)
    x[:8] = 1.0  # the worst case: every input at the top of the range
    quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", x, settings=settings)
    assert op in {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    ref = cpu_session(str(tmp_path / "f.onnx")).run(None, {"x": x})[0]
    got = cpu_session(str(tmp_path / "q.onnx")).run(None, {"x": x})[0]
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("family", sorted(KERNEL_FAMILIES))
def test_default_int8_is_right_in_the_worst_case_in_every_kernel_family(family, tmp_path):
    """The default settings cannot saturate: each kernel family ONNX Runtime has on this machine runs the int8
    net whose every product is 255 x the largest weight, within the thin-convolution test's 5 % bound.

    Holds on any x86 CPU. ONNX Runtime cannot be told to run another CPU's kernels: MLAS picks its x86 kernels
    (SSE, AVX2, AVX-VNNI, AVX-512, AVX-512 VNNI, AMX) once per process, from CPUID, in its platform
    singleton (``MLAS_PLATFORM``'s constructor, onnxruntime/core/mlas/lib/platform.cpp), and neither a session
    config key nor an environment variable changes that choice (only building ORT with
    ``FORCE_GENERIC_ALGORITHMS``, or a CPU emulator). So this covers this machine's instruction set, in each
    kernel family a model of ours reaches (symmetric convolution, padded or not, im2col + GEMM, dense GEMM);
    the CPU-named tests below cover the difference VNNI makes, each on a CPU that has it or not.
    """
    from stn_gluon.export.int8 import INT8

    assert INT8.target == "any"
    assert _worst_case_error(tmp_path, family, INT8) <= 0.05


def _cpu_vnni():
    from stn_gluon.export.int8 import cpu_int8_features

    return cpu_int8_features()["vnni"]


@pytest.mark.skipif(_cpu_vnni() is not False, reason="needs an x86 CPU without VNNI (AVX2 or AVX-512 alone), where "
                                                     "ONNX Runtime's int8 sums are 16-bit; this CPU: "
                                                     "VNNI or unknown")
@pytest.mark.parametrize("family", sorted(KERNEL_FAMILIES))
def test_int8_target_vnni_saturates_on_a_cpu_without_vnni(family, tmp_path):
    """Why the default has 7-bit weights: full 8-bit ones (``--int8-target vnni``) saturate here, far beyond
    the 5 % bound, in every kernel family (measured 49 % on an AVX2 EPYC)."""
    from stn_gluon.export.int8 import INT8_VNNI

    assert _worst_case_error(tmp_path, family, INT8_VNNI) > 0.2


@pytest.mark.skipif(_cpu_vnni() is not True, reason="needs an x86 CPU with VNNI or AMX (avx512_vnni, avx_vnni or "
                                                    "amx_int8 in /proc/cpuinfo); this CPU has none, or unknown")
@pytest.mark.parametrize("family", sorted(KERNEL_FAMILIES))
def test_int8_target_vnni_is_right_on_a_cpu_with_vnni(family, tmp_path):
    """What ``--int8-target vnni`` is for: on a VNNI CPU its full-range weights do not saturate."""
    from stn_gluon.export.int8 import INT8_VNNI

    assert _worst_case_error(tmp_path, family, INT8_VNNI) <= 0.05


@pytest.mark.parametrize("flags, machine, vnni", [
    ("fpu sse2 avx avx2 fma", "x86_64", False),                        # AVX2 alone (an AMD EPYC before Zen 4)
    ("avx2 avx512f avx512bw avx512dq avx512vl", "x86_64", False),      # AVX-512 without VNNI (Skylake-SP)
    ("avx2 avx512f avx512bw avx512_vnni", "x86_64", True),             # Cascade Lake and later
    ("avx2 avx_vnni", "x86_64", True),                                 # Alder Lake
    ("avx2 avx512f avx512_vnni amx_tile amx_int8", "x86_64", True),    # Sapphire Rapids
    ("fp asimd asimddp", "aarch64", None),                             # not x86: no such kernels
    (None, "x86_64", None),                                            # no /proc/cpuinfo
])
def test_cpu_int8_features_reads_the_flags_that_decide_the_kernels(flags, machine, vnni, tmp_path, monkeypatch):
    import platform

    from stn_gluon.export.int8 import cpu_int8_features, describe_cpu

    monkeypatch.setattr(platform, "machine", lambda: machine)
    info = tmp_path / "cpuinfo"
    if flags is not None:
        info.write_text(f"processor\t: 0\nmodel name\t: Some  CPU 9000\nflags\t\t: {flags}\n\n"
                        f"processor\t: 1\nmodel name\t: Some  CPU 9000\nflags\t\t: {flags}\n")
    cpu = cpu_int8_features(str(info))
    assert cpu["vnni"] is vnni
    assert set(cpu["flags"]) == set((flags or "").split()) & {"avx2", "avx512f", "avx512bw", "avx512_vnni",
                                                               "avx_vnni", "amx_int8"}
    if flags is not None:
        assert cpu["model"] == "Some CPU 9000"
        assert describe_cpu(cpu).startswith("Some CPU 9000 (")
    assert {True: ", VNNI)", False: ", no VNNI)", None: "VNNI unknown)"}[vnni] in describe_cpu(cpu)


@pytest.fixture(scope="module")
def vnni_model(run, calibration, tmp_path_factory):
    """The module's model quantized with full 8-bit weights (``--int8-target vnni``)."""
    from stn_gluon.export.int8 import INT8_VNNI, quantize_onnx

    out = tmp_path_factory.mktemp("vnni") / "model-int8.onnx"
    quantize_onnx(run / "model.onnx", out, calibration, settings=INT8_VNNI)
    return out


@pytest.mark.parametrize("vnni, warned", [(False, True), (True, False), (None, False)])
def test_a_vnni_int8_file_warns_in_one_line_on_a_cpu_without_vnni(vnni, warned, vnni_model, int8_model, monkeypatch,
                                                                   capsys):
    import stn_gluon.export.onnx_model as sonnx
    import stn_gluon.export.int8 as quantize
    from stn_gluon.serve.predictors import load_predictor

    monkeypatch.setattr(quantize, "cpu_int8_features", lambda: dict(model="Test CPU", flags=["avx2"], vnni=vnni))
    monkeypatch.setattr(sonnx, "_WARNED", set())
    for _ in range(2):  # once per file and process
        model = sonnx.OnnxModel(str(vnni_model), threads=1)
    err = capsys.readouterr().err
    assert (model.warning is not None) == warned
    if warned:
        assert err.count("\n") == 1 and err.startswith("warning: model-int8.onnx was quantized for CPUs with VNNI")
        assert "Test CPU (avx2, no VNNI)" in err and "--int8-target any" in err
    else:
        assert err == ""
    assert model.meta["int8_target"] == "vnni"
    details = load_predictor(str(vnni_model)).details()
    assert details["int8_target"] == "vnni" and ("warning" in details) == warned
    # the default file is right on every CPU: never a warning
    assert sonnx.OnnxModel(str(int8_model), threads=1).warning is None
    assert load_predictor(str(int8_model)).details()["int8_target"] == "any"
    assert capsys.readouterr().err == ""


def test_predict_cli_warns_about_a_vnni_file_on_a_cpu_without_vnni(vnni_model, sample, tmp_path, monkeypatch,
                                                                   capsys):
    import stn_gluon.export.onnx_model as sonnx
    import stn_gluon.export.int8 as quantize

    monkeypatch.setattr(quantize, "cpu_int8_features", lambda: dict(model="Test CPU", flags=["avx2"], vnni=False))
    monkeypatch.setattr(sonnx, "_WARNED", set())
    np.save(tmp_path / "digit.npy", sample.test_images[:1])
    assert main(["predict", "--model", str(vnni_model), str(tmp_path / "digit.npy"), "--json"]) == 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "quantized for CPUs with VNNI" in line]) == 1


def test_files_from_before_int8_target_are_read_as_made_for_vnni():
    from stn_gluon.export.int8 import INT8, INT8_VNNI, file_int8_target

    old = "int8 (QOperator, uint8 activations / int8 weights, per-channel, Percentile calibration; 256 inputs)"
    assert file_int8_target({"quantization": old}) == "vnni"
    assert file_int8_target({"quantization": "int8 (QOperator, uint8 activations / uint8 weights)"}) == "any"
    assert file_int8_target({"quantization": f"int8 ({INT8.describe()})"}) == "any"
    assert file_int8_target({"quantization": f"int8 ({INT8_VNNI.describe()})"}) == "vnni"
    assert file_int8_target({"opset": "20"}) is None
