import mxnet as mx
import numpy as np
import pytest

import stn_gluon as sg


@pytest.mark.parametrize("stn", [True, False])
def test_stnnet_shapes_and_theta(stn):
    net = sg.get_model("stn_lenet" if stn else "lenet", return_theta=True)
    net.initialize()
    net.hybridize()
    logits, theta = net(mx.nd.random.normal(shape=(3, 1, 28, 28)))
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(theta.asnumpy(), [[1, 0, 0, 0, 1, 0]] * 3)
    assert (net.stn is not None) == stn


def test_stnnet_layers_are_the_reference_ones():
    net = sg.STNNet()
    net.initialize()
    net(mx.nd.zeros((1, 1, 28, 28)))
    shapes = {k.split("stnnet")[-1].split("_", 1)[1]: v.shape for k, v in net.collect_params().items()}
    assert shapes["body_conv0_weight"] == (10, 1, 5, 5)
    assert shapes["body_conv1_weight"] == (20, 10, 5, 5)
    assert shapes["body_dense0_weight"] == (50, 320)
    assert shapes["body_dense1_weight"] == (10, 50)
    assert shapes["stn_loc_conv0_weight"] == (8, 1, 7, 7)
    assert shapes["stn_loc_conv1_weight"] == (10, 8, 5, 5)
    assert shapes["stn_loc_dense0_weight"] == (32, 90)
    assert shapes["stn_regressor_weight"] == (6, 32)


def test_stn_in_front_of_a_gluoncv_backbone():
    net = sg.get_model("stn_cifar_resnet20_v1", num_classes=10, input_shape=(3, 32, 32), return_theta=True)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    logits, theta = net(x)
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(theta.asnumpy(), [[1, 0, 0, 0, 1, 0]] * 2, atol=1e-7)
    # the STN at identity hands the backbone the input unchanged
    np.testing.assert_allclose(net.classifier(x).asnumpy(), logits.asnumpy(), rtol=1e-4, atol=1e-5)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(sg.StnGluonError, match="unknown model"):
        sg.get_model("stn_no_such_net")


def test_zoo_names_the_idsia_nets():
    assert {"stn_idsia", "idsia"} <= set(sg.list_models())
    net = sg.get_model("stn_idsia", dropout=0.1, loc_lr_mult=0.05)
    assert net.config["input_shape"] == [3, 32, 32] and net.config["num_classes"] == 43
    assert net.config["dropout"] == 0.1 and net.stn.loc_lr_mult == 0.05
    assert sg.get_model("idsia", input_shape=(1, 40, 40), num_classes=7).stn is None
    with pytest.raises(sg.StnGluonError, match="localization 'saliency' does not apply"):
        sg.get_model("stn_idsia", localization="saliency")


def test_lenet_baseline_still_area_averages_a_bigger_canvas():
    net = sg.get_model("lenet", input_shape=(1, 56, 56), target_shape=(28, 28))
    net.initialize()
    x = mx.nd.random.normal(shape=(2, 1, 56, 56))
    small = mx.nd.contrib.AdaptiveAvgPooling2D(x, output_size=(28, 28))
    np.testing.assert_allclose(net(x).asnumpy(), net.classifier(small).asnumpy(), rtol=1e-5, atol=1e-6)
