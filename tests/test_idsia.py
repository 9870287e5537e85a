"""The IDSIA traffic-sign network and its STN (``stn_idsia``, ``idsia``): shapes, the identity start, the
localization net's learning rate, hybridized and symbolic twins, ONNX parity, the cost of its convolutions."""
import dataclasses

import mxnet as mx
import numpy as np
import pytest

import stn_gluon as sg
from conftest import assert_onnx_parity
from stn_gluon.export.onnx import export_onnx
from stn_gluon.nn.architecture import Architecture, build_architecture, default_initializer, initialize_net
from stn_gluon.nn.blocks import multiscale_pooling, pool_to
from stn_gluon.nn.models import IDSIANet, STNIDSIANet, multiply_adds
from stn_gluon.symbol import SYMBOL_MODELS, get_symbol_for, localization_params, unsupported_fields


def _arch(model="stn_idsia", shape=(3, 32, 32), classes=43, **changes):
    return Architecture(model=model, input_shape=shape, num_classes=classes,
                        transform="affine" if model.startswith("stn_") else None, **changes)


def _net(arch, seed=0, wild=True, **block_kwargs):
    """The network of ``arch``, every weight and BatchNorm statistic random; a wild STN: each image its own
    transform, far from the identity."""
    mx.random.seed(seed)
    net = build_architecture(arch, **block_kwargs)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1,) + tuple(arch.input_shape)))
    rng = np.random.RandomState(seed)
    for name, param in net.collect_params().items():
        if name.endswith(("gamma", "running_var")):
            param.set_data(mx.nd.array(rng.uniform(0.5, 2.0, param.shape)))
        elif name.endswith(("beta", "running_mean")):
            param.set_data(mx.nd.array(rng.normal(0, 0.5, param.shape)))
    if wild and net.stn is not None:
        reg = net.stn.regressor
        reg.weight.set_data(mx.nd.array(rng.normal(0, 0.05, reg.weight.shape)))
        reg.bias.set_data(mx.nd.array([0.8, 0.3, 0.2, -0.25, 0.9, -0.1]))
    return net


@pytest.mark.parametrize("model", ["stn_idsia", "idsia"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 48, 48)])
def test_shapes_and_layers(model, shape):
    net = sg.get_model(model, input_shape=shape, return_theta=True)
    net.initialize()
    logits, theta = net(mx.nd.random.normal(shape=(2,) + shape))
    assert logits.shape == (2, 43) and theta.shape == (2, 6)
    params = {k[len(model) + 1:]: v.shape for k, v in net.collect_params().items()}
    side = shape[1] // 8  # the common size of the multi-scale features: the third stage's
    assert params["body_stage0_conv_weight"] == (100, shape[0], 7, 7)
    assert params["body_stage1_conv_weight"] == (150, 100, 5, 5)
    assert params["body_stage2_conv_weight"] == (250, 150, 5, 5)
    assert params["body_stage2_bn_gamma"] == (250,)
    assert params["body_dense0_weight"] == (300, (100 + 150 + 250) * side * side)
    assert params["body_dense0_bn_gamma"] == (300,) and "body_dense0_bias" not in params  # BatchNorm shifts
    assert params["body_output_weight"] == (43, 300)
    assert (net.stn is not None) == (model == "stn_idsia")
    if net.stn is not None:
        assert params["stn_loc_conv0_weight"] == (20, shape[0], 5, 5)
        assert params["stn_loc_conv1_weight"] == (20, 20, 5, 5)
        assert params["stn_loc_dense0_weight"] == (100, 40 * side * side)
        assert params["stn_regressor_weight"] == (6, 100)
        warped, _ = net.stn(mx.nd.zeros((1,) + shape))
        assert warped.shape == (1,) + shape


def test_multiscale_pooling_fits_any_size():
    for size in range(1, 40):
        for target in range(1, size + 1):
            kernel, stride = pool_to(size, target)
            assert (size - kernel) // stride + 1 == target and kernel >= stride
    # 30x30: stages of 15, 7 and 3 pixels, all pooled to 3x3, the third unchanged
    stages = [mx.nd.random.normal(shape=(2, c, s, s)) for c, s in ((4, 15), (5, 7), (6, 3))]
    out = multiscale_pooling(mx.nd, stages, [(15, 15), (7, 7), (3, 3)])
    assert out.shape == (2, 15, 3, 3)
    np.testing.assert_array_equal(out[:, 9:].asnumpy(), stages[2].asnumpy())
    np.testing.assert_array_equal(out[:, :4, 0, 0].asnumpy(), stages[0][:, :, :5, :5].max(axis=(2, 3)).asnumpy())
    net = sg.get_model("stn_idsia", input_shape=(3, 30, 30), num_classes=5)
    net.initialize()
    assert net(mx.nd.zeros((1, 3, 30, 30))).shape == (1, 5)


def test_the_published_dense_layer_without_batch_norm():
    net = IDSIANet(dense_bn=False, num_classes=5, prefix="plain_")
    net.initialize()
    names = set(net.collect_params())
    assert "plain_dense0_bias" in names and not any("dense0_bn" in n for n in names)
    assert net(mx.nd.zeros((2, 3, 32, 32))).shape == (2, 5)


def test_bad_sizes_are_one_line_errors():
    with pytest.raises(sg.StnGluonError, match="at least 8x8"):
        IDSIANet(input_shape=(3, 6, 32))
    net = sg.get_model("idsia")
    net.initialize()
    with pytest.raises(sg.StnGluonError, match=r"built for inputs \(N, C, 32, 32\), got shape \(1, 3, 48, 48\)"):
        net(mx.nd.zeros((1, 3, 48, 48)))
    with pytest.raises(sg.StnGluonError, match="brightness_prior 2.0 does not apply"):
        build_architecture(_arch(brightness_prior=2.0))


def test_stn_starts_at_the_identity():
    net = sg.get_model("stn_idsia", return_theta=True)
    initialize_net(net, [mx.cpu()])
    x = mx.nd.random.normal(shape=(3, 3, 32, 32))
    logits, theta = net(x)
    np.testing.assert_allclose(theta.asnumpy(), [[1, 0, 0, 0, 1, 0]] * 3)
    warped, _ = net.stn(x)
    np.testing.assert_allclose(warped.asnumpy(), x.asnumpy(), atol=1e-4)  # the input, resampled in place (float32)
    np.testing.assert_allclose(net.classifier(x).asnumpy(), logits.asnumpy(), rtol=1e-4, atol=1e-5)
    assert net.stn.fill == 0.0  # the zoo's photo model shows the normalised mean outside the image
    assert net.stn.regressor.weight.data().asnumpy().max() == 0


def test_localization_learns_at_loc_lr_mult():
    mult, lr = 0.1, 0.5
    net = build_architecture(_arch(loc_lr_mult=mult, dropout=0.0))
    initialize_net(net, [mx.cpu()])
    x, y = mx.nd.random.normal(shape=(4, 3, 32, 32)), mx.nd.array([0, 1, 2, 3])
    net(x)
    loc = {k for k in net.collect_params() if k.startswith("stn_idsia_stn_")}
    assert len(loc) == 8 and all(net.collect_params()[k].lr_mult == mult for k in loc)
    net.stn.regressor.weight.set_data(mx.nd.random.normal(scale=0.01, shape=(6, 100)))  # gradients everywhere
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr, "wd": 0.0})
    before = {k: p.data().copy() for k, p in net.collect_params().items() if p.grad_req != "null"}
    with mx.autograd.record():
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(x), y)
    loss.backward()
    grads = {k: net.collect_params()[k].grad().copy() for k in before}
    trainer.step(1)
    for k, old in before.items():
        step = (old - net.collect_params()[k].data()).asnumpy()
        assert np.abs(grads[k].asnumpy()).max() > 0, k
        np.testing.assert_allclose(step, lr * (mult if k in loc else 1.0) * grads[k].asnumpy(), rtol=1e-3,
                                   atol=1e-7, err_msg=k)


@pytest.mark.parametrize("model", ["stn_idsia", "idsia"])
def test_hybridized_equals_imperative(model):
    net = _net(_arch(model, dropout=0.0))
    x = mx.nd.random.normal(shape=(3, 3, 32, 32))
    want = net(x).asnumpy()
    with mx.autograd.record():  # training mode: batch statistics
        want_train = net(x).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), want, rtol=1e-4, atol=1e-5)
    with mx.autograd.record():
        np.testing.assert_allclose(net(x).asnumpy(), want_train, rtol=1e-4, atol=1e-5)
    assert np.abs(want - want_train).max() > 1e-3  # the two modes differ: both were checked


def _module(sym, arch, batch, params):
    mod = mx.mod.Module(sym)
    mod.bind(data_shapes=[("data", (batch,) + tuple(arch.input_shape))], label_shapes=[("softmax_label", (batch,))],
             for_training=False)
    mod.set_params({k: params[k] for k in sym.list_arguments() if k in params},
                   {k: params[k] for k in sym.list_auxiliary_states()})
    return mod


@pytest.mark.parametrize("model, fill, target", [("stn_idsia", -0.4, None), ("stn_idsia", 0.0, (24, 24)),
                                                 ("idsia", 0.0, None), ("idsia", 0.0, (16, 16))])
def test_symbol_equals_gluon_with_the_same_weights(model, fill, target):
    arch = _arch(model, fill=fill, target_shape=target)
    net = _net(arch)
    x = mx.nd.random.normal(shape=(4, 3, 32, 32))
    want = net(x).asnumpy()
    sym = get_symbol_for(arch)
    params = {k: v.data() for k, v in net.collect_params().items()}
    assert set(params) == set(sym.list_arguments() + sym.list_auxiliary_states()) - {"data", "softmax_label"}
    logits = sym.get_children()[0]
    mod = _module(sym, arch, 4, params)
    mod.forward(mx.io.DataBatch([x]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), mx.nd.softmax(mx.nd.array(want)).asnumpy(), atol=1e-6)
    run = logits.bind(mx.cpu(), args=dict({k: params[k] for k in logits.list_arguments() if k in params}, data=x),
                      aux_states={k: params[k] for k in logits.list_auxiliary_states()})
    got = run.forward(is_train=False)[0].asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.ptp(want) > 1.0  # logits far apart: a difference in any layer shows
    if model == "stn_idsia":
        attrs = sym.attr_dict()
        loc = localization_params(sym)
        assert len(loc) == 8 and all(attrs[n]["__lr_mult__"] == str(arch.loc_lr_mult) for n in loc)


def test_module_api_trains_the_symbol():
    arch = _arch(shape=(3, 16, 16), classes=4, dropout=0.0)
    assert "stn_idsia" in SYMBOL_MODELS and unsupported_fields(arch) == []
    assert unsupported_fields(dataclasses.replace(arch, transform="tps")) == ["transform 'tps'"]
    rng = np.random.RandomState(0)
    x, y = rng.normal(0, 1, (8, 3, 16, 16)).astype(np.float32), np.arange(8) % 4
    for image, label in zip(x, y):  # the class: which quadrant is brighter
        image[:, 8 * (label // 2):8 * (label // 2) + 8, 8 * (label % 2):8 * (label % 2) + 8] += 2
    x, y = mx.nd.array(x), mx.nd.array(y)
    mod = mx.mod.Module(get_symbol_for(arch))
    mod.bind(data_shapes=[("data", x.shape)], label_shapes=[("softmax_label", y.shape)])
    mx.random.seed(0)
    mod.init_params(default_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9,
                                                                "rescale_grad": 1 / 8})
    losses = []
    for _ in range(6):
        mod.forward_backward(mx.io.DataBatch([x], [y]))
        probs = mod.get_outputs()[0].asnumpy()
        losses.append(-np.log(probs[np.arange(8), y.asnumpy().astype(int)]).mean())
        mod.update()
    assert losses[-1] < 0.1 * losses[0], losses  # it learns the batch
    arg, aux = mod.get_params()
    assert np.abs(aux["stn_idsia_body_stage0_bn_running_mean"].asnumpy()).max() > 0  # BatchNorm keeps statistics
    assert np.abs(arg["stn_idsia_stn_regressor_weight"].asnumpy()).max() > 0  # the localization net learns too


def test_onnx_export_parity(tmp_path):
    net = _net(_arch(fill=-0.4), return_theta=True)
    net.hybridize()
    path = tmp_path / "stn_idsia.onnx"
    export_onnx(net, path)  # the default opset
    theta = assert_onnx_parity(net, path, np.random.RandomState(1), batches=(1, 5))
    assert np.abs(theta - [1, 0, 0, 0, 1, 0]).max() > 0.2


def test_convolutions_cost_171_million_multiply_adds():
    net = STNIDSIANet(stn=False)
    counts = multiply_adds(net, (3, 32, 32))
    assert sorted(counts.values()) == [32 * 32 * 100 * 3 * 7 * 7, 8 * 8 * 250 * 150 * 5 * 5,
                                       16 * 16 * 150 * 100 * 5 * 5]
    assert sum(counts.values()) == 171_052_800  # "about 170 million"
    stn = multiply_adds(STNIDSIANet(), (3, 32, 32), ("Convolution", "FullyConnected"))
    assert 174e6 < sum(stn.values()) < 175e6  # the STN and the dense layers add 2 %


@pytest.mark.parametrize("model", ["stn_idsia", "idsia"])
def test_the_training_flags_of_the_stn_reach_idsia_and_its_symbol(model):
    """--target-size (the STN samples a 64x64 input down to the 32x32 the body takes; the baseline area-averages
    it), --init-scale and --supersample reach the IDSIA net and its Module-API symbol instead of being dropped."""
    from stn_gluon.train.recipes import TrainConfig, build_net, resolve_architecture

    stn_knobs = dict(init_scale=0.5, supersample=2) if model == "stn_idsia" else {}
    cfg = TrainConfig.from_recipe("signs", model=model, dataset="folder:data", target_size=32, **stn_knobs).validate()
    arch = resolve_architecture(cfg, (3, 64, 64), 43, digits=False)
    assert arch.target_shape == (32, 32)
    net = build_net(cfg, (3, 64, 64), 43, digits=False)
    initialize_net(net, [mx.cpu()])
    assert net(mx.nd.zeros((2, 3, 64, 64))).shape == (2, 43)
    if model == "stn_idsia":
        assert arch.init_scale == 0.5 and arch.supersample == 2
        warped, _ = net.stn(mx.nd.zeros((2, 3, 64, 64)))
        assert warped.shape == (2, 3, 32, 32)
        np.testing.assert_allclose(net.stn.regressor.bias.data().asnumpy(), [0.5, 0, 0, 0, 0.5, 0])
    symbol_arch = dataclasses.replace(arch, supersample=1)  # the symbol has no anti-aliasing: refused apart
    _, out_shapes, _ = get_symbol_for(symbol_arch).infer_shape(data=(2, 3, 64, 64))
    assert out_shapes == [(2, 43)]
    assert unsupported_fields(arch) == (["supersample 2"] if model == "stn_idsia" else [])


@pytest.mark.parametrize("model, flag, value, words", [
    ("stn_idsia", "localization", "saliency", "not of stn_idsia's"),
    ("stn_cifar_resnet20_v1", "loc_pool", 2, "not of stn_cifar_resnet20_v1's"),
    ("stn_idsia", "brightness_prior", 0.5, "not of stn_idsia's"),
    ("idsia", "init_scale", 0.5, "idsia has no STN (use --model stn_idsia)"),
    ("lenet", "supersample", 2, "lenet has no STN (use --model stn_lenet)"),
    ("cifar_resnet20_v1", "target_size", 24, "cifar_resnet20_v1 has no STN (use --model stn_cifar_resnet20_v1)")])
def test_a_choice_the_model_does_not_have_is_refused_not_ignored(model, flag, value, words):
    from stn_gluon._runtime.errors import ConfigError
    from stn_gluon.train.recipes import TrainConfig

    cfg = TrainConfig.from_recipe("signs", model=model, dataset="folder:data", **{flag: value})
    with pytest.raises(ConfigError) as err:
        cfg.validate()  # before any data is read
    assert err.value.params == (flag,) and words in str(err.value)


def test_a_backbone_takes_the_stn_size_zoom_and_anti_aliasing():
    from stn_gluon.train.recipes import TrainConfig, build_net

    cfg = TrainConfig(model="stn_cifar_resnet20_v1", dataset="folder:data", target_size=24, init_scale=0.5,
                      supersample=2).validate()
    net = build_net(cfg, (3, 48, 48), 5, digits=False)
    initialize_net(net, [mx.cpu()])
    assert net.stn.supersample == 2
    warped, _ = net.stn(mx.nd.zeros((1, 3, 48, 48)))
    assert warped.shape == (1, 3, 24, 24)
    np.testing.assert_allclose(net.stn.regressor.bias.data().asnumpy(), [0.5, 0, 0, 0, 0.5, 0])
