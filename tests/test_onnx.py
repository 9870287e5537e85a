"""ONNX export: parity with MXNet on far-from-identity transforms, a valid graph, clear errors."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import onnx
import pytest

import stn_gluon as sg
from conftest import assert_onnx_parity, write_mnist_dir
from stn_gluon.cli import main
from stn_gluon._runtime.errors import CheckpointError, StnGluonError
from stn_gluon.export.saved import load_model
from stn_gluon.export.onnx import OPSET, OnnxModel, export_onnx, read_metadata
from stn_gluon.symbol import get_symbol


def _affine(angle_deg, zoom, shear, tx, ty):
    a = np.deg2rad(angle_deg)
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[zoom, shear], [0, zoom]])
    return [lin[0, 0], lin[0, 1], tx, lin[1, 0], lin[1, 1], ty]


# theta maps output to input: zoom < 1 magnifies (zoom-in), > 1 shrinks (zoom-out)
PRESETS = {
    ("affine", "zoom_in"): (_affine(50, 0.45, 0.0, 1.3, -0.4), lambda det: det < 0.45),
    ("affine", "zoom_out"): (_affine(-120, 1.6, 0.6, -1.2, 0.9), lambda det: det > 1.3),
    ("attention", "zoom_in"): ([0.4, 1.2, -0.3], lambda det: det < 0.45),
    ("attention", "zoom_out"): ([2.2, -1.3, 0.5], lambda det: det > 1.3),
}


def _wild_stn(net, transform, preset, seed):
    """Random regressor weights around a far-from-identity bias: each image its own transform."""
    bias, _ = PRESETS[(transform, preset)]
    reg = net.stn.regressor
    reg.weight.set_data(mx.nd.array(np.random.RandomState(seed).normal(0, 0.2, reg.weight.shape)))
    reg.bias.set_data(mx.nd.array(bias))


def _check_thetas_are_wild(theta, transform, preset):
    lin = theta[:, [0, 1, 3, 4]]
    det = np.abs(lin[:, 0] * lin[:, 3] - lin[:, 1] * lin[:, 2])
    assert np.abs(theta[:, [2, 5]]).max(axis=1).min() > 0.5  # every image shifted a lot...
    assert np.abs(theta[:, [2, 5]]).max() > 1.0  # ...some past the border
    assert PRESETS[(transform, preset)][1](det).mean() > 0.5
    assert np.ptp(theta, axis=0).max() > 0.3  # and the transforms differ from image to image
    if transform == "affine":
        assert np.median(np.abs(lin[:, 1])) > 0.2  # rotated / sheared


@pytest.mark.parametrize("transform", ["affine", "attention"])
@pytest.mark.parametrize("preset", ["zoom_in", "zoom_out"])
@pytest.mark.parametrize("fill", [0.0, -0.4242])
def test_gluon_model_parity_far_from_identity(tmp_path, transform, preset, fill):
    mx.random.seed(0)
    net = sg.STNNet(transform=transform, return_theta=True, fill=fill)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 1, 28, 28)))
    _wild_stn(net, transform, preset, 1)
    path = tmp_path / f"{transform}.onnx"
    export_onnx(net, path)
    theta = assert_onnx_parity(net, path, np.random.RandomState(2))
    _check_thetas_are_wild(theta, transform, preset)  # the batch of 64


def test_window_model_parity_and_bounds(tmp_path):
    """The bounded window exports too; however wild its regressor, the window's centre stays on the image."""
    mx.random.seed(0)
    net = sg.STNNet(transform="window", return_theta=True, fill=-0.4242)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 1, 28, 28)))
    reg = net.stn.regressor
    reg.weight.set_data(mx.nd.array(np.random.RandomState(1).normal(0, 0.5, reg.weight.shape)))
    reg.bias.set_data(mx.nd.array([-0.5, 2.0, -2.0]))
    path = tmp_path / "window.onnx"
    export_onnx(net, path)
    theta = assert_onnx_parity(net, path, np.random.RandomState(2))
    assert np.abs(theta[:, [2, 5]]).max() < 1 and np.abs(theta[:, [2, 5]]).max(axis=1).min() > 0.3
    assert np.all((theta[:, 0] > 0) & (theta[:, 0] < 2)) and np.ptp(theta[:, 0]) > 0.2


@pytest.mark.parametrize("fill", [0.0, -0.4242])
def test_module_checkpoint_parity(tmp_path, fill):
    sym = get_symbol(fill=fill)
    mod = mx.mod.Module(sym)
    mod.bind(data_shapes=[("data", (1, 1, 28, 28))], label_shapes=[("softmax_label", (1,))])
    mod.init_params(mx.init.Xavier())
    arg, aux = mod.get_params()
    rng = np.random.RandomState(3)
    arg["stn_lenet_stn_regressor_weight"] = mx.nd.array(rng.normal(0, 0.1, (6, 32)))
    arg["stn_lenet_stn_regressor_bias"] = mx.nd.array(PRESETS[("affine", "zoom_out")][0])
    prefix = str(tmp_path / "model")
    mx.model.save_checkpoint(prefix, 7, sym, arg, aux)
    out = tmp_path / "module.onnx"
    export_onnx(prefix, out)
    model = load_model(prefix)
    ort_model = OnnxModel(str(out))
    for batch in (1, 7, 64):
        x = rng.normal(0, 1, (batch, 1, 28, 28)).astype(np.float32)
        want = model.net(mx.nd.array(x)).asnumpy()
        got = ort_model.run(x)
        assert np.abs(got["logits"] - want).max() <= 1e-4
        # and the Module's own softmax output
        mod2 = mx.mod.Module(sym)
        mod2.bind(data_shapes=[("data", x.shape)], label_shapes=[("softmax_label", (batch,))], for_training=False)
        mod2.set_params(arg, aux)
        mod2.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
        np.testing.assert_allclose(got["probabilities"], mod2.get_outputs()[0].asnumpy(), atol=1e-5)
        if batch == 64:
            _check_thetas_are_wild(got["theta"], "affine", "zoom_out")
    meta = read_metadata(onnx.load(str(out)))
    assert set(meta["source"]) == {"model-symbol.json", "model-0007.params"}


def test_exported_graph_is_valid_and_weights_are_not_inputs(tmp_path):
    net = sg.STNNet()
    net.initialize()
    path = tmp_path / "m.onnx"
    export_onnx(net, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["data"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    weights = {i.name for i in model.graph.initializer}
    assert any(name.endswith("stn_regressor_weight") for name in weights)
    assert [o.domain for o in model.opset_import] == [""] and model.opset_import[0].version == OPSET
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMul", "GridSample", "Conv", "Softmax"} <= ops and "AffineGrid" not in ops  # the default, 16
    export_onnx(net, tmp_path / "m20.onnx", opset=20)
    assert {"AffineGrid", "GridSample"} <= {n.op_type for n in onnx.load(str(tmp_path / "m20.onnx")).graph.node}
    meta = read_metadata(model)
    assert meta["input_shape"] == [None, 1, 28, 28] and meta["opset"] == str(OPSET)
    assert meta["classes"] == [str(i) for i in range(10)] and meta["mean"] == pytest.approx(0.1307)
    assert [o.name for o in model.graph.output] == ["logits", "probabilities", "theta", "warped"]


def test_baseline_exports_without_stn_outputs(tmp_path):
    net = sg.STNNet(stn=False)
    net.initialize()
    export_onnx(net, tmp_path / "b.onnx")
    m = OnnxModel(str(tmp_path / "b.onnx"))
    assert m.outputs == ["logits", "probabilities"]
    x = np.random.rand(3, 1, 28, 28).astype(np.float32)
    assert np.abs(m.run(x)["logits"] - net(mx.nd.array(x)).asnumpy()).max() <= 1e-4


def test_errors(tmp_path):
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"definitely not protobuf")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OnnxModel(str(not_onnx))
    with pytest.raises(CheckpointError, match="not found"):
        OnnxModel(str(tmp_path / "missing.onnx"))
    # an ONNX model whose input is not an image batch
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 10])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 10])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    flat = tmp_path / "flat.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), str(flat))
    with pytest.raises(CheckpointError, match=r"expected one \(N, C, H, W\) input"):
        OnnxModel(str(flat))
    net = sg.STNNet()
    net.initialize()
    export_onnx(net, tmp_path / "ok.onnx")
    with pytest.raises(StnGluonError, match=r"input must be \(N, 1, 28, 28\)"):
        OnnxModel(str(tmp_path / "ok.onnx")).run(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(StnGluonError, match="opset"):
        export_onnx(net, tmp_path / "old.onnx", opset=13)


@pytest.fixture(scope="session")
def trained_onnx_once(tmp_path_factory, sample):
    """`stn-gluon train` (2 epochs) then `export-onnx`, run once; the tests get copies (``trained_onnx``)."""
    root = tmp_path_factory.mktemp("onnx_trained")
    data = write_mnist_dir(root / "mnist", sample, 600, 200)  # what the mnist_dir fixture holds
    save = root / "run"
    assert main(["train", "--epochs", "2", "--data-dir", str(data), "--save-dir", str(save),
                 "--no-progress", "--lr", "0.05"]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export-onnx", "--model", str(save)]) == 0
    assert "Parity on 16 random inputs" in out.getvalue() and (save / "model.onnx").exists()
    return save


@pytest.fixture
def trained_onnx(trained_onnx_once, tmp_path):
    """This test's own copy of the exported run."""
    return shutil.copytree(trained_onnx_once, tmp_path / "run")


def _digit_files(tmp_path, sample, n=12):
    from PIL import Image

    files = []
    for i in range(n):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(sample.test_images[i]).save(path)
        files.append(str(path))
    np.save(tmp_path / "stack.npy", sample.test_images[:n])
    return files


def test_predict_same_answers_on_both_backends(trained_onnx, tmp_path, sample, capsys):
    files = _digit_files(tmp_path, sample)
    answers = {}
    for backend, model in (("onnxruntime", trained_onnx / "model.onnx"), ("mxnet", trained_onnx)):
        assert main(["predict", "--model", str(model), "--backend", backend, "--json"] + files) == 0
        answers[backend] = json.loads(capsys.readouterr().out)["predictions"]
    a, b = answers["onnxruntime"], answers["mxnet"]
    assert [p["label"] for p in a] == [p["label"] for p in b]
    np.testing.assert_allclose([p["probabilities"] for p in a], [p["probabilities"] for p in b], atol=1e-4)
    np.testing.assert_allclose([p["theta"] for p in a], [p["theta"] for p in b], atol=1e-4)
    # the .npy stack gives the same answers as the PNGs
    assert main(["predict", "--model", str(trained_onnx / "model.onnx"), "--json", str(tmp_path / "stack.npy")]) == 0
    stack = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["label"] for p in stack] == [p["label"] for p in a]
    # --invert: the same digits drawn dark on light
    from PIL import Image
    inverted = tmp_path / "inverted.png"
    Image.fromarray(255 - sample.test_images[0]).resize((200, 200)).save(inverted)
    assert main(["predict", "--model", str(trained_onnx / "model.onnx"), "--invert", "--json", str(inverted)]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"] == a[0]["label"]
    # the rectified images
    out_dir = tmp_path / "rect"
    assert main(["predict", "--model", str(trained_onnx / "model.onnx"), "--save-rectified", str(out_dir),
                 files[0]]) == 0
    assert (out_dir / "digit0_rectified.png").read_bytes()[:4] == b"\x89PNG"


def test_infer_script_uses_only_onnxruntime_and_numpy(trained_onnx, tmp_path, sample):
    np.save(tmp_path / "d.npy", sample.test_images[:5])
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "infer_onnx.py")
    probe = ("import sys, runpy\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "bad = [m for m in ('mxnet', 'stn_gluon', 'PIL', 'onnx') if m in sys.modules]\n"
             "print('IMPORTED', bad)\n")
    out = subprocess.run([sys.executable, "-c", probe, script, str(trained_onnx / "model.onnx"),
                          str(tmp_path / "d.npy")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout
    assert out.stdout.count("(p=") == 5


@pytest.mark.parametrize("case, expect", [
    ("missing_file", "file not found"),
    ("not_an_image", "not a readable image"),
    ("bad_npy", "not a readable .npy"),
    ("npy_shape", "does not fit the model's input"),
    ("npy_nan", "NaN"),
    ("model_not_onnx", "not a loadable ONNX model"),
    ("mxnet_backend_on_onnx", "needs the MXNet export"),
])
def test_predict_errors_are_one_line(case, expect, trained_onnx, tmp_path, capsys):
    onnx_path = str(trained_onnx / "model.onnx")
    model, inputs, extra = onnx_path, [], []
    if case == "missing_file":
        inputs = [str(tmp_path / "nope.png")]
    elif case == "not_an_image":
        (tmp_path / "x.png").write_bytes(b"GIF89a but not really")
        inputs = [str(tmp_path / "x.png")]
    elif case == "bad_npy":
        (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
        inputs = [str(tmp_path / "x.npy")]
    elif case == "npy_shape":
        np.save(tmp_path / "x.npy", np.zeros((3, 32, 32), np.uint8))
        inputs = [str(tmp_path / "x.npy")]
    elif case == "npy_nan":
        np.save(tmp_path / "x.npy", np.full((28, 28), np.nan, np.float32))
        inputs = [str(tmp_path / "x.npy")]
    elif case == "model_not_onnx":
        (tmp_path / "fake.onnx").write_bytes(b"nope")
        model, inputs = str(tmp_path / "fake.onnx"), [str(tmp_path / "y.npy")]
        np.save(tmp_path / "y.npy", np.zeros((28, 28), np.uint8))
    elif case == "mxnet_backend_on_onnx":
        np.save(tmp_path / "y.npy", np.zeros((28, 28), np.uint8))
        inputs, extra = [str(tmp_path / "y.npy")], ["--backend", "mxnet"]
    code = main(["predict", "--model", model] + extra + inputs)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, err
