import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

import stn_gluon as sg
from reference import affine_sample


def _init(block, x):
    block.initialize(mx.init.Xavier())
    block(x)
    return block


@pytest.mark.parametrize("transform", ["affine", "attention", "window"])
def test_identity_init_returns_input(transform):
    x = mx.nd.random.normal(shape=(5, 1, 28, 28))
    stn = _init(sg.SpatialTransformer((28, 28), transform, return_theta=True), x)
    out, theta = stn(x)
    np.testing.assert_allclose(out.asnumpy(), x.asnumpy(), atol=1e-5)
    np.testing.assert_allclose(theta.asnumpy(), [[1, 0, 0, 0, 1, 0]] * 5, atol=1e-7)
    assert (stn.regressor.weight.data().asnumpy() == 0).all()


@pytest.mark.parametrize("transform", ["affine", "attention", "window"])
def test_init_scale_zooms_on_the_centre(transform):
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    stn = _init(sg.SpatialTransformer((16, 16), transform, init_scale=0.5, return_theta=True), x)
    out, theta = stn(x)
    np.testing.assert_allclose(theta.asnumpy(), [[0.5, 0, 0, 0, 0.5, 0]] * 2, atol=1e-7)
    want = affine_sample(x.asnumpy(), theta.asnumpy().reshape(2, 2, 3), (16, 16))
    np.testing.assert_allclose(out.asnumpy(), want, atol=1e-5)


def test_target_shape_can_differ_from_input():
    x = mx.nd.random.uniform(shape=(3, 1, 128, 128))
    stn = _init(sg.SpatialTransformer((28, 28), "attention", init_scale=0.25), x)
    assert stn(x).shape == (3, 1, 28, 28)
    stn.hybridize()
    assert stn(x).shape == (3, 1, 28, 28)


def test_target_shape_defaults_to_input_size():
    x = mx.nd.random.uniform(shape=(2, 2, 20, 24))
    stn = _init(sg.SpatialTransformer(), x)
    assert stn.target_shape == (20, 24)
    assert stn(x).shape == (2, 2, 20, 24)


@pytest.mark.parametrize("transform", ["affine", "attention", "window"])
def test_non_identity_output_matches_reference_and_hybridized(transform):
    mx.random.seed(1)
    x = mx.nd.random.uniform(shape=(4, 1, 28, 28))
    stn = _init(sg.SpatialTransformer((20, 24), transform, return_theta=True), x)
    stn.regressor.weight.set_data(mx.nd.random.normal(scale=0.2, shape=stn.regressor.weight.shape))
    out, theta = stn(x)
    assert np.abs(theta.asnumpy() - [1, 0, 0, 0, 1, 0]).max() > 0.05
    want = affine_sample(x.asnumpy(), theta.asnumpy().reshape(-1, 2, 3), (20, 24))
    np.testing.assert_allclose(out.asnumpy(), want, atol=1e-5)
    stn.hybridize(static_alloc=True, static_shape=True)
    out_h, theta_h = stn(x)
    np.testing.assert_allclose(out_h.asnumpy(), out.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(theta_h.asnumpy(), theta.asnumpy(), atol=1e-6)


def test_custom_localization_network():
    loc = gluon.nn.HybridSequential()
    loc.add(gluon.nn.GlobalAvgPool2D(), gluon.nn.Flatten(), gluon.nn.Dense(8, activation="tanh"))
    x = mx.nd.random.uniform(shape=(2, 3, 16, 16))
    stn = _init(sg.SpatialTransformer((16, 16), localization=loc, loc_lr_mult=0.5), x)
    np.testing.assert_allclose(stn(x).asnumpy(), x.asnumpy(), atol=1e-5)
    assert all(p.lr_mult == 0.5 for p in loc.collect_params().values())


@pytest.mark.parametrize("stn", [True, False])
def test_export_and_symbolblock_import_round_trip(tmp_path, stn):
    net = sg.STNNet(stn=stn)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.normal(shape=(6, 1, 28, 28))
    net.hybridize()
    net(x)
    if stn:  # a non-identity transform, so the sampler really matters
        net.stn.regressor.weight.set_data(mx.nd.random.normal(scale=0.02, shape=net.stn.regressor.weight.shape))
    want = net(x).asnumpy()
    net.export(str(tmp_path / "m"))
    loaded = gluon.SymbolBlock.imports(str(tmp_path / "m-symbol.json"), ["data"],
                                       str(tmp_path / "m-0000.params"))
    np.testing.assert_array_equal(loaded(x).asnumpy(), want)
    ops = {node["op"] for node in __import__("json").load(open(tmp_path / "m-symbol.json"))["nodes"]}
    assert ({"GridGenerator", "BilinearSampler"} <= ops) == stn


def test_loc_lr_mult_reaches_the_trainer():
    """One SGD step with equal gradients moves localization weights loc_lr_mult times as far."""
    mult, lr = 0.1, 0.5
    net = sg.STNNet(loc_lr_mult=mult)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.normal(shape=(2, 1, 28, 28))
    with mx.autograd.record():
        net(x).sum().backward()
    params = net.collect_params()
    for p in params.values():
        p.grad()[:] = 1.0
    before = {k: p.data().copy() for k, p in params.items()}
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": lr, "wd": 0.0})
    trainer.step(1)
    loc = [k for k in params if "_stn_" in k]
    assert len(loc) == 8  # 3 localization layers + the regressor, weight and bias each
    for k, p in params.items():
        moved = (before[k] - p.data()).asnumpy()
        np.testing.assert_allclose(moved, lr * (mult if k in loc else 1.0), rtol=1e-5)


def test_bad_input_is_a_clear_error():
    stn = sg.SpatialTransformer((28, 28))
    stn.initialize()
    with pytest.raises(sg.StnGluonError, match=r"\(N, C, H, W\)"):
        stn(mx.nd.zeros((28, 28)))
    with pytest.raises(sg.StnGluonError, match="unknown transform"):
        sg.SpatialTransformer((28, 28), "perspective-ish")
    with pytest.raises(sg.StnGluonError, match="loc_lr_mult"):
        sg.SpatialTransformer((28, 28), loc_lr_mult=-1)


@pytest.mark.parametrize("transform", ["affine", "attention"])
def test_fill_block_matches_functional_form_and_hybridizes(transform):
    x = mx.nd.random.uniform(shape=(3, 1, 28, 28))
    stn = _init(sg.SpatialTransformer((28, 28), transform, fill=-0.42, return_theta=True, init_scale=1.6), x)
    out, theta = stn(x)
    np.testing.assert_allclose(out.asnumpy(), sg.affine_transform(x, theta, fill=-0.42).asnumpy(), atol=1e-6)
    assert np.isclose(out.asnumpy()[:, :, 0, 0], -0.42, atol=1e-6).all()  # zoomed out: the corners are outside
    stn.hybridize()
    np.testing.assert_allclose(stn(x)[0].asnumpy(), out.asnumpy(), atol=1e-6)
