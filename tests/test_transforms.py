"""Projective and thin-plate-spline transforms: identity, known warps against NumPy references,
gradients, hybridization, export round trip and ONNX parity."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

import stn_gluon as sg
from stn_gluon.nn.ops import MIN_HOMOGRAPHY_DENOMINATOR, get_transform, tps_control_points
from conftest import assert_onnx_parity
from reference import affine_sample, homography_from_corners, homography_sample, tps_sample

CORNERS = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)


def _init(block, x):
    block.initialize(mx.init.Xavier())
    block(x)
    return block


def _homography_params(h):
    h = np.asarray(h, float) / h[2][2]
    return h.ravel()[:8].astype(np.float32)


@pytest.mark.parametrize("transform", ["projective", "tps", "tps3"])
def test_identity_init_returns_input(transform):
    x = mx.nd.random.normal(shape=(4, 2, 28, 28))
    stn = _init(sg.SpatialTransformer((28, 28), transform, return_theta=True), x)
    out, theta = stn(x)
    # float32 grid rounding (~1e-6 in [-1, 1]) times pixel steps of up to ~5
    np.testing.assert_allclose(out.asnumpy(), x.asnumpy(), atol=5e-5)
    ident = np.array(get_transform(transform).identity(), np.float32)
    np.testing.assert_allclose(theta.asnumpy(), np.tile(ident, (4, 1)), atol=1e-7)
    assert theta.shape == (4, get_transform(transform).num_params)


def test_known_homography_matches_numpy_reference():
    rng = np.random.RandomState(0)
    images = rng.rand(3, 2, 28, 28).astype(np.float32)
    # the output's corners come from these source points: a real perspective, not an affine map
    homographies = [homography_from_corners(CORNERS, CORNERS * 0.8 + rng.normal(0, 0.15, (4, 2)))
                    for _ in range(3)]
    assert min(abs(h[2, 0]) + abs(h[2, 1]) for h in homographies) > 0.02
    params = mx.nd.array(np.stack([_homography_params(h) for h in homographies]))
    got = get_transform("projective").warp(mx.nd.array(images), params, (21, 25)).asnumpy()
    np.testing.assert_allclose(got, homography_sample(images, homographies, (21, 25)), atol=1e-4)


def test_homography_with_g_h_zero_is_the_affine_warp():
    rng = np.random.RandomState(1)
    x = mx.nd.array(rng.rand(2, 1, 20, 20))
    theta = np.array([[0.8, -0.3, 0.2, 0.25, 1.1, -0.1], [1.2, 0.1, -0.3, 0.0, 0.7, 0.4]], np.float32)
    params = mx.nd.array(np.hstack([theta, np.zeros((2, 2), np.float32)]))
    got = get_transform("projective").warp(x, params, (20, 20)).asnumpy()
    np.testing.assert_allclose(got, affine_sample(x.asnumpy(), theta.reshape(2, 2, 3), (20, 20)), atol=1e-5)


def test_homography_denominator_is_clamped_not_infinite():
    # g = 3: the denominator 3x + 1 crosses zero inside the output
    params = mx.nd.array([[1, 0, 0, 0, 1, 0, 3.0, 0]])
    grid = sg.ops.homography_grid(params, (9, 9)).asnumpy()
    assert np.isfinite(grid).all()
    assert np.abs(grid).max() <= 1.0 / MIN_HOMOGRAPHY_DENOMINATOR * 2 + 1e-5


def test_tps_control_point_shift_matches_numpy_reference():
    rng = np.random.RandomState(2)
    images = rng.rand(3, 1, 28, 28).astype(np.float32)
    for k in (3, 4):
        ctrl = tps_control_points(k)
        source = ctrl[None] + rng.normal(0, 0.12, (3, k * k, 2))
        params = np.concatenate([source[..., 0], source[..., 1]], axis=1).astype(np.float32)
        got = get_transform(f"tps{k}").warp(mx.nd.array(images), mx.nd.array(params), (24, 22)).asnumpy()
        np.testing.assert_allclose(got, tps_sample(images, source.astype(np.float32), k, (24, 22)), atol=1e-4)


def test_tps_single_point_shift_is_local_and_exact_at_the_control_point():
    """Moving one control point moves the grid there by exactly that much and leaves far corners nearly still."""
    k, shape = 4, (31, 31)  # 31 px: control points fall on pixel centres (0, 10, 20, 30)
    ident = np.array(get_transform("tps").identity(), np.float32)
    params = ident.copy()
    i = 1 * k + 1  # control point (x=-1/3, y=-1/3), at pixel (10, 10)
    params[i] += 0.2          # x
    params[k * k + i] -= 0.1  # y
    grid = sg.ops.tps_grid(mx.nd.array(params[None]), mx.nd.array(sg.ops.tps_grid_matrix(k, shape)),
                           shape).asnumpy()[0]
    np.testing.assert_allclose(grid[:, 10, 10], [-1 / 3 + 0.2, -1 / 3 - 0.1], atol=1e-5)
    np.testing.assert_allclose(grid[:, 30, 30], [1, 1], atol=1e-5)  # another control point: fixed
    moved = np.hypot(grid[0] - np.linspace(-1, 1, 31)[None], grid[1] - np.linspace(-1, 1, 31)[:, None])
    assert moved[:5, :5].max() > 0.05 and moved[25:, 25:].max() < 0.05


def test_tps_all_points_shifted_is_a_translation():
    x = mx.nd.random.uniform(shape=(2, 1, 28, 28))
    params = np.array(get_transform("tps").identity(), np.float32)
    params[:16] += 0.3
    params[16:] -= 0.2
    got = get_transform("tps").warp(x, mx.nd.array([params] * 2), (28, 28)).asnumpy()
    want = sg.affine_transform(x, mx.nd.array([[1, 0, 0.3, 0, 1, -0.2]] * 2)).asnumpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("transform", ["projective", "tps3"])
def test_gradients_match_finite_differences(transform):
    """d(loss)/d(params) by autograd agrees with central differences of the NumPy reference."""
    rng = np.random.RandomState(3)
    images = rng.rand(2, 1, 9, 8)
    weights = rng.rand(2, 1, 7, 6)
    t = get_transform(transform)
    params = np.array([t.identity()] * 2, np.float64) + rng.normal(0, 0.08, (2, t.num_params))

    def loss_np(p):
        if transform == "projective":
            hs = np.concatenate([p, np.ones((2, 1))], axis=1).reshape(2, 3, 3)
            out = homography_sample(images, hs, (7, 6))
        else:
            out = tps_sample(images, np.stack([p[:, :9], p[:, 9:]], axis=-1), 3, (7, 6))
        return float((out * weights).sum())

    p = mx.nd.array(params)
    p.attach_grad()
    with mx.autograd.record():
        loss = (t.warp(mx.nd.array(images), p, (7, 6)) * mx.nd.array(weights)).sum()
    loss.backward()
    eps = 1e-5
    num = np.zeros_like(params)
    for idx in np.ndindex(params.shape):
        d = np.zeros_like(params)
        d[idx] = eps
        num[idx] = (loss_np(params + d) - loss_np(params - d)) / (2 * eps)
    np.testing.assert_allclose(p.grad.asnumpy(), num, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("transform", ["projective", "tps"])
def test_block_hybridizes_with_target_shape_and_fill(transform):
    x = mx.nd.random.uniform(shape=(3, 1, 40, 40))
    stn = _init(sg.SpatialTransformer((28, 28), transform, return_theta=True, fill=-0.42), x)
    stn.regressor.weight.set_data(mx.nd.random.normal(scale=0.05, shape=stn.regressor.weight.shape))
    out, theta = stn(x)
    assert out.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(out.asnumpy(), stn.transform.warp(x, theta, (28, 28), fill=-0.42).asnumpy(),
                               atol=1e-5)
    stn.hybridize(static_alloc=True, static_shape=True)
    out_h, theta_h = stn(x)
    np.testing.assert_allclose(out_h.asnumpy(), out.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(theta_h.asnumpy(), theta.asnumpy(), atol=1e-6)


def test_tps_matrix_is_a_constant_not_a_trained_weight():
    x = mx.nd.random.uniform(shape=(2, 1, 28, 28))
    net = sg.STNNet(transform="tps")
    net.initialize(mx.init.Xavier())
    net(x)
    const = [p for name, p in net.collect_params().items() if name.endswith("tps_matrix")]
    assert len(const) == 1 and const[0].grad_req == "null" and const[0].shape == (2 * 28 * 28, 32)
    before = const[0].data().copy()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1.0})
    with mx.autograd.record():
        net(x).sum().backward()
    trainer.step(2)
    assert (const[0].data() == before).asnumpy().all()


def test_unknown_tps_size_is_refused():
    with pytest.raises(sg.StnGluonError, match="unknown transform"):
        sg.SpatialTransformer((28, 28), "tps1")


def _perturbed_pair(transform, shape, **kwargs):
    """An STN without target_shape and one with it explicit, sharing non-identity weights."""
    x = mx.nd.random.uniform(shape=(3, 1) + shape)
    inferred = sg.SpatialTransformer(None, transform, return_theta=True, **kwargs)
    explicit = sg.SpatialTransformer(shape, transform, return_theta=True, **kwargs)
    for stn in (inferred, explicit):
        stn.initialize(mx.init.Xavier())
    explicit(x)
    reg = explicit.regressor.weight
    reg.set_data(mx.nd.random.normal(scale=0.05, shape=reg.shape))
    return x, inferred, explicit


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("transform", ["tps", "tps3"])
def test_tps_takes_target_shape_from_input(transform, hybridize):
    mx.random.seed(3)
    x, inferred, explicit = _perturbed_pair(transform, (24, 20))
    if hybridize:
        inferred.hybridize(static_alloc=True, static_shape=True)
    assert inferred.target_shape is None
    inferred(x)  # first call: builds the grid matrix for the input's size
    assert inferred.target_shape == (24, 20)
    for name, p in explicit.collect_params().items():
        inferred.collect_params()[name.replace(explicit.prefix, inferred.prefix)].set_data(p.data())
    matrix = inferred.tps_matrix
    assert matrix.grad_req == "null" and matrix.shape == (2 * 24 * 20, explicit.transform.num_params)
    np.testing.assert_allclose(matrix.data().asnumpy(), sg.ops.tps_grid_matrix(explicit.transform.k, (24, 20)))
    out, theta = inferred(x)
    want, want_theta = explicit(x)
    assert np.abs(theta.asnumpy() - explicit.transform.identity()).max() > 0.01  # not the identity
    np.testing.assert_allclose(out.asnumpy(), want.asnumpy(), atol=1e-5)
    np.testing.assert_allclose(theta.asnumpy(), want_theta.asnumpy(), atol=1e-6)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("transform", ["affine", "tps"])
def test_input_of_another_size_is_refused_once_the_target_shape_was_taken(transform, hybridize):
    stn = sg.SpatialTransformer(transform=transform)
    stn.initialize()
    if hybridize:
        stn.hybridize()
    assert stn(mx.nd.zeros((2, 1, 28, 28))).shape == (2, 1, 28, 28)
    with pytest.raises(sg.StnGluonError, match=r"target_shape \(28, 28\) from its first input.*\(40, 40\)"):
        stn(mx.nd.zeros((2, 1, 40, 40)))
    assert stn(mx.nd.zeros((5, 1, 28, 28))).shape == (5, 1, 28, 28)  # another batch size is fine


def test_tps_with_inferred_shape_saves_exports_and_supersamples(tmp_path):
    mx.random.seed(4)
    x, stn, _ = _perturbed_pair("tps", (28, 28), supersample=2, fill=-0.42)
    stn.hybridize()
    stn(x)
    assert stn.tps_matrix.shape == (2 * 56 * 56, 32)  # the sampling grid is 2x2 per output pixel
    reg = stn.regressor.weight
    reg.set_data(mx.nd.random.normal(scale=0.05, shape=reg.shape))
    out, theta = stn(x)
    assert out.shape == (3, 1, 28, 28)
    stn.export(str(tmp_path / "m"))
    loaded = gluon.SymbolBlock.imports(str(tmp_path / "m-symbol.json"), ["data"], str(tmp_path / "m-0000.params"))
    np.testing.assert_allclose(loaded(x)[0].asnumpy(), out.asnumpy(), atol=1e-6)
    stn.save_parameters(str(tmp_path / "w.params"))
    again = sg.SpatialTransformer(None, "tps", return_theta=True, supersample=2, fill=-0.42, prefix=stn.prefix)
    again.load_parameters(str(tmp_path / "w.params"))
    np.testing.assert_allclose(again(x)[0].asnumpy(), out.asnumpy(), atol=1e-6)
    other = sg.SpatialTransformer(None, "tps", supersample=2, prefix=stn.prefix)
    other.load_parameters(str(tmp_path / "w.params"))
    with pytest.raises(sg.StnGluonError, match="tps_matrix .* another input size"):
        other(mx.nd.zeros((1, 1, 32, 32)))


@pytest.mark.parametrize("transform", ["projective", "tps"])
def test_export_and_symbolblock_import_round_trip(tmp_path, transform):
    net = sg.STNNet(transform=transform)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.normal(shape=(5, 1, 28, 28))
    net.hybridize()
    net(x)
    net.stn.regressor.weight.set_data(mx.nd.random.normal(scale=0.03, shape=net.stn.regressor.weight.shape))
    want = net(x).asnumpy()
    net.export(str(tmp_path / "m"))
    loaded = gluon.SymbolBlock.imports(str(tmp_path / "m-symbol.json"), ["data"], str(tmp_path / "m-0000.params"))
    np.testing.assert_allclose(loaded(x).asnumpy(), want, atol=1e-6)


@pytest.mark.parametrize("transform", ["projective", "tps"])
@pytest.mark.parametrize("fill", [0.0, -0.4242])
def test_onnx_parity_far_from_identity(tmp_path, transform, fill):
    from stn_gluon.export.onnx import export_onnx

    mx.random.seed(0)
    rng = np.random.RandomState(1)
    net = sg.STNNet(transform=transform, return_theta=True, fill=fill)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 1, 28, 28)))
    reg = net.stn.regressor
    reg.weight.set_data(mx.nd.array(rng.normal(0, 0.05, reg.weight.shape)))
    if transform == "projective":
        reg.bias.set_data(mx.nd.array(_homography_params(
            homography_from_corners(CORNERS, [[-0.5, -0.9], [1.2, -0.6], [0.8, 1.1], [-1.3, 0.7]]))))
    else:
        bias = np.array(get_transform("tps").identity(), np.float32) + rng.normal(0, 0.25, 32)
        reg.bias.set_data(mx.nd.array(bias))
    path = tmp_path / f"{transform}.onnx"
    export_onnx(net, path)
    theta = assert_onnx_parity(net, path, rng)
    ident = np.array(get_transform(transform).identity(), np.float32)
    assert np.abs(theta - ident).max() > 0.3  # far from the identity


def test_supersampled_identity_is_the_area_average():
    """4x4 samples per output pixel over a 4x larger input: the identity view is the 4x4 block mean."""
    x = mx.nd.random.uniform(shape=(2, 1, 112, 112))
    for transform in ("attention", "tps"):
        stn = _init(sg.SpatialTransformer((28, 28), transform, supersample=4), x)
        want = x.asnumpy().reshape(2, 1, 28, 4, 28, 4).mean(axis=(3, 5))
        np.testing.assert_allclose(stn(x).asnumpy(), want, atol=1e-5)
    plain = _init(sg.SpatialTransformer((28, 28), "attention"), x)
    assert np.abs(plain(x).asnumpy() - want).max() > 0.3  # one point per 4x4 block: aliased
    with pytest.raises(sg.StnGluonError, match="supersample"):
        sg.SpatialTransformer((28, 28), supersample=0)


def test_supersampled_attention_model_exports_to_onnx(tmp_path):
    from stn_gluon.export.onnx import export_onnx

    mx.random.seed(0)
    rng = np.random.RandomState(4)
    net = sg.STNNet(input_shape=(1, 112, 112), target_shape=(28, 28), transform="attention", loc_pool=4,
                    supersample=4, return_theta=True, fill=-0.4242)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 1, 112, 112)))
    reg = net.stn.regressor
    reg.weight.set_data(mx.nd.array(rng.normal(0, 0.05, reg.weight.shape)))
    reg.bias.set_data(mx.nd.array([0.3, 0.5, -0.6]))
    export_onnx(net, tmp_path / "att.onnx")
    theta = assert_onnx_parity(net, tmp_path / "att.onnx", rng, batches=(1, 9))
    assert theta.shape == (9, 6) and np.abs(theta[:, 0] - 0.3).max() < 0.5


def test_tps_warp_on_symbols_needs_its_constant():
    with pytest.raises(sg.StnGluonError, match="tps_matrix"):
        get_transform("tps").warp(mx.sym.var("data"), mx.sym.var("p"), (28, 28))
    out = get_transform("projective").warp(mx.sym.var("data"), mx.sym.var("p"), (28, 28))  # no constants
    assert isinstance(out, mx.sym.Symbol)


# ---------------------------------------------------------------- saliency localization (soft-argmax)

def _saliency_stn(size=64, pool=2, transform="attention", init_scale=1.0, **kwargs):
    loc = sg.SaliencyLocalization((size, size), pool=pool, transform=transform, init_scale=init_scale, prefix="loc_")
    stn = sg.SpatialTransformer((16, 16), transform, localization=loc, return_theta=True, **kwargs)
    return _init(stn, mx.nd.zeros((1, 1, size, size)))


@pytest.mark.parametrize("transform", ["attention", "affine"])
def test_saliency_localization_starts_at_the_identity_and_has_no_regressor(transform):
    x = mx.nd.random.normal(shape=(3, 1, 64, 64))
    stn = _saliency_stn(transform=transform)
    params, theta = stn.localization(x), stn(x)[1]
    np.testing.assert_allclose(theta.asnumpy(), [[1, 0, 0, 0, 1, 0]] * 3, atol=1e-6)
    assert params.shape == (3, get_transform(transform).num_params)
    assert stn.regressor is None and stn.localization.cell_centres.grad_req == "null"
    _, theta = _saliency_stn(transform=transform, init_scale=0.5)(x)
    np.testing.assert_allclose(theta.asnumpy(), [[0.5, 0, 0, 0, 0.5, 0]] * 3, atol=1e-6)
    with pytest.raises(sg.StnGluonError, match="outputs attention or affine parameters, not tps"):
        sg.SaliencyLocalization((64, 64), transform="tps")
    with pytest.raises(sg.StnGluonError, match="outputs attention parameters, not affine"):
        sg.SpatialTransformer((16, 16), "affine", localization=sg.SaliencyLocalization((64, 64)))


@pytest.mark.parametrize("transform", ["attention", "affine"])
def test_saliency_translation_is_the_soft_argmax_of_the_score_map(transform):
    """With a score that fires on bright pixels, the window's centre goes to the bright blob, wherever it is."""
    stn = _saliency_stn(pool=1, transform=transform)
    loc = stn.localization
    for conv in loc.features[:2]:  # conv0, conv1: pass the (positive) image through channel 0
        w = np.zeros(conv.weight.shape, np.float32)
        w[0, 0, 1, 1] = 1.0
        conv.weight.set_data(mx.nd.array(w))
        conv.bias.set_data(mx.nd.zeros(conv.bias.shape))
    conv2 = loc.features[3]
    w = np.zeros(conv2.weight.shape, np.float32)
    w[0, 0, 1, 1] = 1.0
    conv2.weight.set_data(mx.nd.array(w))
    score = np.zeros(loc.score.weight.shape, np.float32)
    score[0, 0] = 50.0  # sharp soft-argmax
    loc.score.weight.set_data(mx.nd.array(score))
    x = np.zeros((3, 1, 64, 64), np.float32)
    spots = [(10, 50), (40, 8), (31, 31)]  # (row, col)
    for i, (r, c) in enumerate(spots):
        x[i, 0, r - 1:r + 3, c - 1:c + 3] = 1.0
    _, theta = stn(mx.nd.array(x))
    for (r, c), th in zip(spots, theta.asnumpy()):
        # the blob covers map cell (r // 2, c // 2) of 32; cell centres are linspace(-1, 1, 32)
        want = np.linspace(-1, 1, 32)[[c // 2 + 0, r // 2 + 0]]
        np.testing.assert_allclose(th[[2, 5]], want, atol=0.08)
        assert abs(th[2]) <= 1 and abs(th[5]) <= 1


def test_brightness_prior_starts_the_window_on_the_bright_blob_and_is_trained():
    """With the prior, untrained random features already point the centre at the ink; without it, the centre."""
    mx.random.seed(3)
    x = np.full((3, 1, 64, 64), -0.4, np.float32)  # normalised black, plus noise
    x += np.abs(np.random.RandomState(0).normal(0, 0.3, x.shape)).astype(np.float32)
    spots = [(12, 48), (44, 10), (30, 34)]  # (row, col) of 10x10 bright blobs
    for i, (r, c) in enumerate(spots):
        x[i, 0, r - 5:r + 5, c - 5:c + 5] = 2.8
    centres = {}
    for prior in (0.0, 8.0):
        loc = sg.SaliencyLocalization((64, 64), pool=2, init_scale=0.4, brightness_prior=prior, prefix="loc_")
        stn = sg.SpatialTransformer((16, 16), "attention", localization=loc, return_theta=True)
        stn.initialize(mx.init.Xavier())
        with mx.autograd.record():
            _, theta = stn(mx.nd.array(x))
            loss = theta.sum()
        loss.backward()
        centres[prior] = theta.asnumpy()
        np.testing.assert_allclose(theta.asnumpy()[:, 0], 0.4, atol=1e-6)  # the prior moves the centre only
    np.testing.assert_allclose(centres[0.0][:, [2, 5]], 0, atol=1e-6)
    for (r, c), th in zip(spots, centres[8.0]):
        want = np.array([c, r]) / 63 * 2 - 1
        assert np.abs(th[[2, 5]] - want).max() < 0.15, (th[[2, 5]], want)
    assert np.abs(loc.brightness.weight.grad().asnumpy()).max() > 0  # beta is learned
    np.testing.assert_allclose(loc.brightness.weight.data().asnumpy(), 8.0)
    with pytest.raises(sg.StnGluonError, match="brightness_prior must be >= 0"):
        sg.SaliencyLocalization((64, 64), brightness_prior=-1.0)
    with pytest.raises(sg.StnGluonError, match="needs the saliency localization"):
        sg.STNNet(input_shape=(1, 64, 64), transform="attention", brightness_prior=5.0)


@pytest.mark.parametrize("transform", ["attention", "affine"])
def test_saliency_model_gradients_reach_the_score_map_and_export_to_onnx(tmp_path, transform):
    from stn_gluon.export.onnx import export_onnx

    mx.random.seed(0)
    net = sg.STNNet(input_shape=(1, 64, 64), target_shape=(28, 28), transform=transform, localization="saliency",
                    loc_pool=2, supersample=2, return_theta=True, fill=-0.4242, brightness_prior=3.0)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.normal(shape=(4, 1, 64, 64))
    with mx.autograd.record():
        loss = net(x)[0].sum()
    loss.backward()
    assert np.abs(net.stn.localization.score.weight.grad().asnumpy()).max() > 0  # learns from the start
    rng = np.random.RandomState(5)
    score = net.stn.localization.score
    score.weight.set_data(mx.nd.array(rng.normal(0, 30.0, score.weight.shape)))
    head = net.stn.localization.scale  # the scale (attention) or linear part (affine)
    head.weight.set_data(mx.nd.array(rng.normal(0, 5.0, head.weight.shape)))
    net.hybridize()
    path = tmp_path / "saliency.onnx"
    export_onnx(net, path)
    theta = assert_onnx_parity(net, path, np.random.RandomState(2))
    assert np.ptp(theta[:, 2]) > 0.05 and np.ptp(theta[:, 0]) > 0.05  # images got windows of their own
