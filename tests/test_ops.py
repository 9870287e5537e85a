import mxnet as mx
import numpy as np
import pytest

import stn_gluon as sg
from reference import affine_sample, random_thetas


@pytest.mark.parametrize("out_hw", [(28, 28), (17, 23), (40, 33)])
def test_affine_transform_matches_numpy_reference(out_hw):
    rng = np.random.RandomState(0)
    images = rng.rand(16, 3, 28, 31).astype(np.float32)
    theta = random_thetas(rng, 16)
    got = sg.affine_transform(mx.nd.array(images), mx.nd.array(theta), out_hw).asnumpy()
    want = affine_sample(images, theta, out_hw)
    assert got.shape == (16, 3) + out_hw
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want).sum() > 0 and (want == 0).any()  # the thetas hit the zero padding too


def test_theta_shapes_and_default_target():
    x = mx.nd.random.uniform(shape=(2, 1, 12, 9))
    ident = mx.nd.array([[1, 0, 0, 0, 1, 0]] * 2)
    np.testing.assert_allclose(sg.affine_transform(x, ident).asnumpy(), x.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(sg.affine_transform(x, ident.reshape((2, 2, 3))).asnumpy(), x.asnumpy(), atol=1e-6)


def test_translation_moves_pixels_and_pads_zero():
    x = mx.nd.arange(1, 26).reshape((1, 1, 5, 5))
    # sample from one pixel to the right: output column j reads input column j + 1
    theta = mx.nd.array([[1, 0, 0.5, 0, 1, 0]])  # 0.5 in [-1, 1] units = 1 pixel of 5
    out = sg.affine_transform(x, theta).asnumpy()[0, 0]
    np.testing.assert_allclose(out[:, :4], x.asnumpy()[0, 0, :, 1:], atol=1e-5)
    np.testing.assert_allclose(out[:, 4], 0, atol=1e-6)


def test_attention_to_affine():
    p = mx.nd.array([[0.5, 0.1, -0.2], [2.0, 0, 0]])
    np.testing.assert_allclose(sg.attention_to_affine(p).asnumpy(),
                               [[0.5, 0, 0.1, 0, 0.5, -0.2], [2, 0, 0, 0, 2, 0]])


def test_window_to_affine_is_a_bounded_attention_window():
    p = mx.nd.array([[0.0, 0.0, 0.0], [np.log(0.25 / 1.75), np.arctanh(0.5), -np.arctanh(0.2)]])
    np.testing.assert_allclose(sg.window_to_affine(p).asnumpy(),
                               [[1, 0, 0, 0, 1, 0], [0.25, 0, 0.5, 0, 0.25, -0.2]], atol=1e-6)
    wild = sg.window_to_affine(mx.nd.array(np.random.RandomState(0).normal(0, 30, (500, 3)))).asnumpy()
    assert np.all(np.abs(wild[:, [2, 5]]) <= 1) and np.all((wild[:, 0] >= 0) & (wild[:, 0] <= 2))
    assert np.abs(wild[:, [2, 5]]).max() > 0.99  # the bounds are reached, never passed
    with pytest.raises(sg.StnGluonError, match="window.*init_scale=2"):
        sg.SpatialTransformer((8, 8), "window", init_scale=2.0)


def test_bad_shapes_are_clear_errors():
    x = mx.nd.zeros((2, 1, 8, 8))
    with pytest.raises(sg.StnGluonError, match="theta"):
        sg.affine_transform(x, mx.nd.zeros((3, 6)))
    with pytest.raises(sg.StnGluonError, match=r"\(N, C, H, W\)"):
        sg.affine_transform(mx.nd.zeros((8, 8)), mx.nd.zeros((1, 6)))
    with pytest.raises(sg.StnGluonError, match="target_shape"):
        sg.affine_transform(x, mx.nd.zeros((2, 6)), (1, 5))


def test_gradients_match_finite_differences():
    """d(loss)/d(theta) and d(loss)/d(data) from autograd agree with central differences."""
    rng = np.random.RandomState(3)
    images = rng.rand(2, 2, 9, 8)
    theta = random_thetas(rng, 2).reshape(2, 6).astype(np.float64) * 0.6
    weights = rng.rand(2, 2, 7, 6)

    def loss_np(img, th):
        return float((affine_sample(img, th.reshape(2, 2, 3), (7, 6)) * weights).sum())

    # MXNet's sampler is float32-only; the finite differences are taken on the float64 reference.
    x = mx.nd.array(images)
    t = mx.nd.array(theta)
    x.attach_grad()
    t.attach_grad()
    with mx.autograd.record():
        loss = (sg.affine_transform(x, t, (7, 6)) * mx.nd.array(weights)).sum()
    loss.backward()
    eps = 1e-5
    num_t = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        d = np.zeros_like(theta)
        d[idx] = eps
        num_t[idx] = (loss_np(images, theta + d) - loss_np(images, theta - d)) / (2 * eps)
    np.testing.assert_allclose(t.grad.asnumpy(), num_t, rtol=1e-3, atol=1e-3)
    num_x = np.zeros_like(images)
    for idx in list(np.ndindex(images.shape))[::7]:
        d = np.zeros_like(images)
        d[idx] = eps
        num_x[idx] = (loss_np(images + d, theta) - loss_np(images - d, theta)) / (2 * eps)
        assert abs(x.grad.asnumpy()[idx] - num_x[idx]) < 1e-4


def test_fill_is_what_outside_reads():
    rng = np.random.RandomState(5)
    images = rng.rand(6, 2, 28, 28).astype(np.float32)
    theta = random_thetas(rng, 6)
    fill = -0.4242
    got = sg.affine_transform(mx.nd.array(images), mx.nd.array(theta), (21, 19), fill=fill).asnumpy()
    np.testing.assert_allclose(got, affine_sample(images - fill, theta, (21, 19)) + fill, atol=1e-5)
    far = sg.affine_transform(mx.nd.array(images), mx.nd.array([[1, 0, 5, 0, 1, 5]] * 6), fill=fill)
    np.testing.assert_allclose(far.asnumpy(), fill, atol=1e-6)  # entirely outside: all fill
