"""The symbolic graph (stn_gluon.symbol) is the same model as the Gluon STNNet."""
import mxnet as mx
import numpy as np
import pytest

import stn_gluon as sg
from stn_gluon.export.saved import load_model
from stn_gluon.symbol import get_loc, get_symbol, localization_params


def _gluon_net(stn=True, fill=0.0):
    net = sg.STNNet(stn=stn, prefix="stn_lenet_", fill=fill)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 1, 28, 28)))
    if stn:  # far from the identity: rotations/zooms/shifts differ per image
        net.stn.regressor.weight.set_data(mx.nd.random.normal(scale=0.1, shape=net.stn.regressor.weight.shape))
    return net


def _module(sym, batch, arg_params, aux_params=None):
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"])
    mod.bind(data_shapes=[("data", (batch, 1, 28, 28))], label_shapes=[("softmax_label", (batch,))],
             for_training=False)
    mod.set_params(arg_params, aux_params or {})
    return mod


@pytest.mark.parametrize("stn, fill", [(True, 0.0), (True, -0.4242), (False, 0.0)])
def test_symbol_and_gluon_compute_the_same_outputs(stn, fill):
    mx.random.seed(1)
    net = _gluon_net(stn, fill)
    x = mx.nd.random.normal(shape=(8, 1, 28, 28))
    want = mx.nd.softmax(net(x)).asnumpy()
    sym = get_symbol(add_stn=stn, fill=fill)
    params = {k: v.data() for k, v in net.collect_params().items()}
    assert set(params) == set(sym.list_arguments()) - {"data", "softmax_label"}
    mod = _module(sym, 8, params)
    mod.forward(mx.io.DataBatch([x]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), want, atol=1e-5)


def test_every_localization_parameter_carries_the_lr_mult():
    sym = get_symbol(lr_mult=0.01)
    attrs = sym.attr_dict()
    loc = localization_params(sym)
    assert len(loc) == 8
    assert all(attrs[name]["__lr_mult__"] == "0.01" for name in loc)
    assert not any("__lr_mult__" in attrs.get(n, {}) for n in sym.list_arguments() if n not in loc)


def test_module_update_scales_localization_steps_by_lr_mult():
    mult, lr = 0.01, 0.5
    sym = get_symbol(lr_mult=mult)
    mod = mx.mod.Module(sym)
    mod.bind(data_shapes=[("data", (2, 1, 28, 28))], label_shapes=[("softmax_label", (2,))])
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": lr, "wd": 0.0,
                                                          "rescale_grad": 1.0})
    before = {k: v.copy() for k, v in mod.get_params()[0].items()}
    mod.forward_backward(mx.io.DataBatch([mx.nd.random.normal(shape=(2, 1, 28, 28))], [mx.nd.array([1, 2])]))
    for grads in mod._exec_group.grad_arrays:
        for g in grads:
            g[:] = 1.0
    mod.update()
    after = mod.get_params()[0]
    loc = set(localization_params(sym))
    for k in before:
        moved = (before[k] - after[k]).asnumpy()
        np.testing.assert_allclose(moved, lr * (mult if k in loc else 1.0), rtol=1e-5, err_msg=k)


def test_get_loc_starts_at_the_identity():
    data = mx.sym.var("data")
    loc = get_loc(data, init_scale=0.5)
    mod = mx.mod.Module(loc, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (3, 1, 28, 28))], for_training=False)
    mod.init_params(mx.init.Xavier())
    mod.forward(mx.io.DataBatch([mx.nd.random.normal(shape=(3, 1, 28, 28))]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), [[0.5, 0, 0, 0, 0.5, 0]] * 3)


def test_spatial_transformer_op_equals_gridgenerator_plus_bilinearsampler():
    x = mx.nd.random.uniform(shape=(5, 2, 28, 28))
    theta = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (5, 6)))
    a = mx.nd.SpatialTransformer(x, theta, target_shape=(20, 24), transform_type="affine", sampler_type="bilinear")
    b = sg.affine_transform(x, theta, (20, 24))
    np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-5)


@pytest.mark.parametrize("fill", [0.0, -0.4242])
def test_module_checkpoint_loads_as_symbolblock_and_gluon_weights_load_into_module(tmp_path, fill):
    net = _gluon_net(fill=fill)
    params = {k: v.data() for k, v in net.collect_params().items()}
    sym = get_symbol(fill=fill)
    prefix = str(tmp_path / "mod")
    mx.model.save_checkpoint(prefix, 3, sym, params, {})
    model = load_model(prefix)
    assert model.epoch == 3 and model.stn is not None
    x = mx.nd.random.normal(shape=(4, 1, 28, 28))
    np.testing.assert_allclose(model.net(x).asnumpy(), net(x).asnumpy(), atol=1e-5)
    warped, theta = model.stn(x)
    want_warped, want_theta = net.stn(x)
    np.testing.assert_allclose(theta.asnumpy(), want_theta.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(warped.asnumpy(), want_warped.asnumpy(), atol=5e-5)  # two samplers, float32
    assert np.abs(want_theta.asnumpy() - [1, 0, 0, 0, 1, 0]).max() > 0.05
