"""Every supported opset in every runtime: ONNX Runtime, ONNX's reference evaluator and OpenVINO.

Each (model, opset) is exported once per module and every runtime runs the same bytes. The models are tiny
(2x12x16 inputs) with localization weights set far from the identity, so that rotations, shears, zooms,
perspective, bending and shifts past the border are all exercised.
"""
import os
import re

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.gluon import nn

import stn_gluon as sg
from stn_gluon.cli import main
from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.export.onnx import OPSET, OPSETS, export_graph, export_onnx, register_converters, target_opset
from stn_gluon.export.converters import grid_sample_mode
from stn_gluon.export.runtimes import RUNTIMES, load_runtime

FAMILIES = ("affine", "attention", "projective", "tps")
INPUT = (2, 12, 16)
TARGET = (10, 14)  # the STN's output differs from its input
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _far_bias(transform):
    """Regressor biases far from the identity: rotation + shear + shift past the border, a 2.2x zoom-in off
    centre, a strong perspective, control points moved by up to 0.6."""
    if transform == "affine":
        return [0.35, -0.95, 0.9, 0.85, 0.55, -0.7]
    if transform == "attention":
        return [0.45, 0.6, -0.5]
    if transform == "projective":
        return [0.7, 0.4, 0.5, -0.3, 1.2, -0.6, 0.35, -0.25]
    identity = np.array(sg.get_transform(transform).identity())
    return list(identity + np.random.RandomState(5).uniform(-0.6, 0.6, identity.shape))


def _tiny_stn_classifier(transform):
    mx.random.seed(0)
    loc = nn.HybridSequential(prefix="loc_")
    with loc.name_scope():
        loc.add(nn.Conv2D(4, 3, strides=2, activation="relu"), nn.Flatten(), nn.Dense(8, activation="tanh"))
    stn = sg.SpatialTransformer(target_shape=TARGET, transform=transform, localization=loc)
    head = nn.HybridSequential(prefix="head_")
    with head.name_scope():
        head.add(nn.Conv2D(4, 3, activation="relu"), nn.Flatten(), nn.Dense(5))
    net = sg.STNClassifier(head, stn, return_theta=True)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1,) + INPUT))
    reg = stn.regressor
    reg.weight.set_data(mx.nd.array(np.random.RandomState(1).normal(0, 0.3, reg.weight.shape)))
    reg.bias.set_data(mx.nd.array(_far_bias(transform)))
    return net


@pytest.fixture(scope="module")
def classifiers():
    return {family: _tiny_stn_classifier(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def classifier_exports(classifiers, tmp_path_factory):
    """``(family, opset)`` -> the exported ONNX bytes, each exported once, on first use."""
    folder = tmp_path_factory.mktemp("onnx_opsets")
    cache = {}

    def get(family, opset):
        if (family, opset) not in cache:
            path = folder / f"{family}-{opset}.onnx"
            export_onnx(classifiers[family], path, input_shape=INPUT, opset=opset)
            cache[family, opset] = path.read_bytes()
        return cache[family, opset]
    return get


def _mode_and_opset(data):
    model = onnx.load_from_string(data)
    modes = {a.s.decode() for n in model.graph.node if n.op_type == "GridSample" for a in n.attribute
             if a.name == "mode"}
    ops = {n.op_type for n in model.graph.node}
    return [o.version for o in model.opset_import if o.domain == ""], modes, ops


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_stamped_opset_and_operators(classifier_exports, family, opset):
    stamped, modes, ops = _mode_and_opset(classifier_exports(family, opset))
    assert stamped == [opset] and modes == {grid_sample_mode(opset)}
    assert modes == ({"linear"} if opset >= 20 else {"bilinear"})
    assert ("AffineGrid" in ops) == (opset >= 20 and family != "tps")  # the spline's grid is a MatMul


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_classifier_parity_every_runtime(classifiers, classifier_exports, family, opset, runtime):
    net = classifiers[family]
    run = load_runtime(runtime, classifier_exports(family, opset))
    rng = np.random.RandomState(FAMILIES.index(family))
    identity = sg.get_transform(family).theta(mx.nd.array([sg.get_transform(family).identity()])).asnumpy()
    zeros = []
    for batch in (1, 7):
        x = rng.normal(0, 1, (batch,) + INPUT).astype(np.float32)
        logits, theta = (a.asnumpy() for a in net(mx.nd.array(x)))
        warped = net.stn(mx.nd.array(x))[0].asnumpy()
        got = dict(zip(["logits", "probabilities", "theta", "warped"], run({"data": x})))
        assert np.abs(got["logits"] - logits).max() <= 1e-4
        assert np.abs(got["theta"] - theta).max() <= 1e-5
        assert np.abs(got["warped"] - warped).max() <= 5e-4
        np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1, rtol=1e-5)
        assert np.abs(theta - identity).max(axis=1).min() > 0.3  # every image far from the identity
        zeros.append(np.mean(warped == 0))
    assert 0.05 < np.mean(zeros) < 0.95  # the grids reach past the border, yet see the image too


class FlowWarp(mx.gluon.HybridBlock):
    """image (N, 3, H, W), flow (N, 2, H, W) in pixels -> (warped image, the grid)."""

    def hybrid_forward(self, F, image, flow):
        grid = F.GridGenerator(flow, transform_type="warp")
        return F.BilinearSampler(image, grid, cudnn_off=True), grid


@pytest.fixture(scope="module")
def warp_exports(tmp_path_factory):
    """The flow-warp block saved once, exported through ``export_graph`` at every opset: ``opset -> bytes``."""
    folder = tmp_path_factory.mktemp("onnx_warp")
    net = FlowWarp()
    net.hybridize()
    net(mx.nd.zeros((1, 3, 9, 11)), mx.nd.zeros((1, 2, 9, 11)))
    net.export(str(folder / "warp"))
    out = {}
    for opset in OPSETS:
        export_graph(str(folder / "warp"), folder / f"warp-{opset}.onnx", {"data0": (3, 9, 11), "data1": (2, 9, 11)},
                     opset=opset)
        out[opset] = (folder / f"warp-{opset}.onnx").read_bytes()
    return net, out


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("opset", OPSETS)
def test_warp_with_flows_leaving_the_image(warp_exports, opset, runtime):
    net, exports = warp_exports
    run = load_runtime(runtime, exports[opset])
    rng = np.random.RandomState(opset)
    for batch in (1, 7):
        image = rng.normal(0, 1, (batch, 3, 9, 11)).astype(np.float32)
        flow = rng.uniform(-10, 10, (batch, 2, 9, 11)).astype(np.float32)  # up to a whole image away
        warped, grid = (a.asnumpy() for a in net(mx.nd.array(image), mx.nd.array(flow)))
        got_warped, got_grid = run({"data0": image, "data1": flow})
        outside = (np.abs(grid) > 1).any(axis=1).mean()
        assert 0.3 < outside < 0.95, outside  # extreme grids: most points off the image, some on it
        assert np.abs(got_grid - grid).max() <= 1e-5
        assert np.abs(got_warped - warped).max() <= 5e-4


def test_general_export_keeps_inputs_outputs_and_dynamic_batch(warp_exports):
    _, exports = warp_exports
    model = onnx.load_from_string(exports[18])
    assert [i.name for i in model.graph.input] == ["data0", "data1"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "N" for i in model.graph.input)
    assert len(model.graph.output) == 2 and model.graph.output[0].name.endswith("bilinearsampler0")
    onnx.checker.check_model(model, full_check=True)


# --- third-party graphs: no project code in them, only register_converters() ---

class RefinedFlowWarp(mx.gluon.HybridBlock):
    """A user's block: warp an image by a flow refined by a convolution."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.refine = nn.Conv2D(2, 3, padding=1)

    def hybrid_forward(self, F, image, flow):
        return F.BilinearSampler(image, F.GridGenerator(flow + self.refine(flow), transform_type="warp"))


def _multi_output_symbol():
    """A Symbol graph with three outputs: SpatialTransformer to another size, an affine grid bent by other ops
    before sampling, and a pooled feature."""
    data = mx.sym.var("image")
    feat = mx.sym.Activation(mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), name="c1"), act_type="relu")
    theta = mx.sym.FullyConnected(mx.sym.flatten(feat), num_hidden=6, name="fc")
    st = mx.sym.SpatialTransformer(data, theta, target_shape=(7, 9), transform_type="affine",
                                   sampler_type="bilinear", cudnn_off=True, name="st")
    grid = mx.sym.GridGenerator(theta, transform_type="affine", target_shape=(8, 8), name="gg")
    bent = mx.sym.tanh(grid * 1.5) * 1.2
    sampled = mx.sym.BilinearSampler(data, bent, name="bs")
    pooled = mx.sym.mean(feat, axis=(2, 3), name="pool")
    return mx.sym.Group([st, sampled, pooled])


def test_third_party_flow_warp_block_through_mxnet_export_model(tmp_path):
    register_converters()
    register_converters()  # idempotent
    net = RefinedFlowWarp()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    rng = np.random.RandomState(3)
    image = rng.normal(0, 1, (7, 3, 10, 12)).astype(np.float32)
    flow = rng.uniform(-15, 15, (7, 2, 10, 12)).astype(np.float32)
    want = net(mx.nd.array(image), mx.nd.array(flow)).asnumpy()
    net.export(str(tmp_path / "user"))
    sym, params = str(tmp_path / "user-symbol.json"), str(tmp_path / "user-0000.params")
    # as MXNet does it: converted at, and stamped with, the installed onnx's newest opset
    newest = onnx.defs.onnx_opset_version()
    plain = str(tmp_path / "plain.onnx")
    mx.onnx.export_model(sym, params, [image.shape, flow.shape], [np.float32] * 2, plain, dynamic=True)
    stamped, modes, _ = _mode_and_opset(open(plain, "rb").read())
    assert stamped == [newest] and modes == {"linear"}
    got = load_runtime("onnxruntime", plain)({"data0": image, "data1": flow})[0]
    assert np.abs(got - want).max() <= 5e-4
    # at an opset of one's choosing
    for opset in (OPSET, 20):
        path = str(tmp_path / f"user-{opset}.onnx")
        with target_opset(opset):
            mx.onnx.export_model(sym, params, [image.shape, flow.shape], [np.float32] * 2, path, dynamic=True)
        data = open(path, "rb").read()
        stamped, modes, _ = _mode_and_opset(data)
        assert stamped == [opset] and modes == {grid_sample_mode(opset)}
        for runtime in RUNTIMES:
            got = load_runtime(runtime, data)({"data0": image, "data1": flow})[0]
            assert np.abs(got - want).max() <= 5e-4, runtime
    assert onnx.defs.onnx_opset_version() == newest  # target_opset put the default back
    assert onnx.checker.DEFAULT_CONTEXT.opset_imports[""] == newest


def test_third_party_multi_output_graph(tmp_path):
    sym = _multi_output_symbol()
    rng = np.random.RandomState(4)
    arg_shapes, _, _ = sym.infer_shape(image=(1, 3, 12, 14))
    params = {n: mx.nd.array(rng.normal(0, 0.2, s)) for n, s in zip(sym.list_arguments(), arg_shapes) if n != "image"}
    params["fc_bias"] = mx.nd.array([0.6, -0.8, 0.7, 0.9, 0.4, -0.9])  # rotated, sheared, shifted past the border
    x = rng.normal(0, 1, (7, 3, 12, 14)).astype(np.float32)
    want = [o.asnumpy() for o in sym.bind(mx.cpu(), dict(params, image=mx.nd.array(x))).forward()]
    for opset in (OPSET, 19):
        path = str(tmp_path / f"multi-{opset}.onnx")
        with target_opset(opset):
            mx.onnx.export_model(sym, params, [x.shape], [np.float32], path, dynamic=True)
        data = open(path, "rb").read()
        model = onnx.load_from_string(data)
        assert [o.version for o in model.opset_import] == [opset] and "AffineGrid" not in {
            n.op_type for n in model.graph.node}
        names = [o.name for o in model.graph.output]
        order = [names.index(n) for n in ("st", "bs", "pool")]
        for runtime in RUNTIMES:
            got = load_runtime(runtime, data)({"image": x})
            for i, expected in zip(order, want):
                assert got[i].shape == expected.shape and np.abs(got[i] - expected).max() <= 1e-4, (runtime, i)


@pytest.mark.parametrize("what, expect", [
    ("gg_side_1", r"GridGenerator 'gg': target_shape \(1, 8\)"),
    ("st_side_1", r"SpatialTransformer 'st': target_shape \(7, 1\)"),
    ("opset_13", r"GridGenerator 'gg' needs opset >= 16"),
])
def test_what_onnx_cannot_express_is_refused_in_one_line(tmp_path, what, expect):
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    theta = mx.sym.var("theta")
    if what == "st_side_1":
        sym = mx.sym.SpatialTransformer(mx.sym.var("image"), theta, target_shape=(7, 1), transform_type="affine",
                                        sampler_type="bilinear", name="st")
        shapes = [(1, 1, 5, 5), (1, 6)]
    else:
        sym = mx.sym.GridGenerator(theta, transform_type="affine", target_shape=(1, 8) if what == "gg_side_1"
                                   else (4, 4), name="gg")
        shapes = [(1, 6)]
    opset = 13 if what == "opset_13" else OPSET
    with pytest.raises(StnGluonError, match=expect) as err:
        MXNetGraph().create_onnx_graph_proto(sym, {}, shapes, [onnx.TensorProto.FLOAT] * len(shapes),
                                             opset_version=opset)
    assert "\n" not in str(err.value)


def test_cli_exports_any_graph_at_the_opset_asked(tmp_path, capsys):
    net = RefinedFlowWarp()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 10, 12)), mx.nd.zeros((1, 2, 10, 12)))
    prefix = str(tmp_path / "user")
    net.export(prefix)
    out = tmp_path / "user.onnx"
    assert main(["export-onnx", "--model", prefix, "--input", "data0=3,10,12", "--input", "data1=2,10,12",
                 "--opset", "17", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "opset 17" in printed and "data1 (N, 2, 10, 12)" in printed
    diff = float(re.search(r"max \|output difference\| (\S+)", printed).group(1))
    assert diff <= 1e-4
    stamped, modes, _ = _mode_and_opset(out.read_bytes())
    assert stamped == [17] and modes == {"bilinear"}
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["opset"] == "17" and meta["params_file"] == "user-0000.params"


def test_cli_exports_a_module_checkpoint_with_its_softmax_head(tmp_path, capsys):
    from stn_gluon.symbol import get_symbol

    sym = get_symbol()
    mod = mx.mod.Module(sym)
    mod.bind(data_shapes=[("data", (1, 1, 28, 28))], label_shapes=[("softmax_label", (1,))])
    mod.init_params(mx.init.Xavier())
    arg, aux = mod.get_params()
    mx.model.save_checkpoint(str(tmp_path / "mod"), 3, sym, arg, aux)
    out = tmp_path / "mod.onnx"
    assert main(["export-onnx", "--model", str(tmp_path / "mod"), "--input", "data=1,28,28", "--opset", "18",
                 "-o", str(out)]) == 0
    diff = float(re.search(r"max \|output difference\| (\S+)", capsys.readouterr().out).group(1))
    model = onnx.load(str(out))
    assert diff <= 1e-5 and [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["softmax"]  # the loss head exports as its softmax
    x = np.random.RandomState(0).normal(0, 1, (7, 1, 28, 28)).astype(np.float32)
    probs = load_runtime("onnxruntime", str(out))({"data": x})[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("args, expect", [
    (["--input", "data0=3,10", "--input", "data1=2,10,12"], "does not accept inputs"),
    (["--input", "data0=3,10,12"], "give the shape of input 'data1'"),
    (["--input", "data0=3,10,12", "--input", "data1=2,10,12", "--input", "flow=2,1,1"], "has no input 'flow'"),
    (["--input", "data0=3,10,12", "--input", "data0=3,10,12"], "names an input twice"),
    (["--input", "data0:3,10,12"], "an input is NAME=C,H,W"),
    (["--input", "data0=3,0,12"], "an input is NAME=C,H,W"),
    (["--opset", "15"], "must be one of 16..20"),
    (["--opset", "21"], "must be one of 16..20"),
    ([], "export-onnx takes --input NAME=C,H,W"),
])
def test_cli_export_errors_are_one_line(tmp_path, capsys, args, expect):
    net = RefinedFlowWarp()
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros((1, 3, 10, 12)), mx.nd.zeros((1, 2, 10, 12)))
    net.export(str(tmp_path / "user"))
    try:
        code = main(["export-onnx", "--model", str(tmp_path / "user"), "-o", str(tmp_path / "x.onnx")] + args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.onnx").exists()


def _docs_example():
    with open(os.path.join(ROOT, "docs", "export-onnx.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    return next(b for b in blocks if "class FlowWarp" in b)


def test_docs_example_exports_a_users_warp_block(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_docs_example(), "docs/export-onnx.md", "exec"), {"__name__": "__main__"})
    diff = float(re.search(r"max \|ONNX Runtime - MXNet\|: (\S+)", capsys.readouterr().out).group(1))
    assert diff <= 5e-4
    model = onnx.load(str(tmp_path / "flowwarp.onnx"))
    assert [o.version for o in model.opset_import] == [16]
