"""Colour images and class names, end to end: decoding to the model's channels, the digit rules only for digit
models, ``predict`` and the server on a tiny 3-channel model built here (both backends)."""
import base64
import concurrent.futures
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.cli import main
from stn_gluon.serve.inputs import InputSpec, apply_rules, decode_pixels, read_inputs
from test_serving import Server

CLASSES = ["stop", "go", "water", "night", "snow"]
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
SHAPE = (3, 32, 32)
BACKENDS = ("mxnet", "onnxruntime")


def make_colour_model(folder, digits=False):
    """A tiny colour STN classifier in ``folder``: ``model-symbol.json``/``.params``/``model.json`` and
    ``model.onnx``. Its STN starts zoomed 2x on the centre (theta = diag(0.5)); its classifier is the mean of
    each normalised channel through fixed weights: red -> stop, green -> go, blue -> water, black -> night,
    white -> snow. ``digits`` None writes no ``digits`` key (a model from before the flag)."""
    import mxnet as mx
    import onnx
    from mxnet.gluon import nn

    from stn_gluon.export.onnx import export_onnx
    from stn_gluon.export.saved import export_block
    from stn_gluon.nn.blocks import SpatialTransformer
    from stn_gluon.nn.models import STNClassifier

    body = nn.HybridSequential(prefix="body_")
    with body.name_scope():
        body.add(nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(len(CLASSES)))
    net = STNClassifier(body, SpatialTransformer(target_shape=SHAPE[1:], init_scale=0.5), prefix="colour_")
    net.initialize()
    net(mx.nd.zeros((1,) + SHAPE))
    weights = 4 * np.array([[1, -.5, -.5], [-.5, 1, -.5], [-.5, -.5, 1], [-1, -1, -1], [1, 1, 1]], np.float32)
    body[2].weight.set_data(mx.nd.array(weights))
    body[2].bias.set_data(mx.nd.array([0, 0, 0, -2, -2]))
    meta = dict(input_shape=list(SHAPE), input_name="data", mean=MEAN, std=STD, classes=CLASSES,
                transform="affine", source="test colour model")
    if digits is not None:
        meta["digits"] = digits
    export_block(net, str(folder / "model"), mx.nd.zeros((1,) + SHAPE), meta=meta)
    export_onnx(str(folder), folder / "model.onnx")
    proto = onnx.load(str(folder / "model.onnx"))
    props = {p.key for p in proto.metadata_props}
    if digits is not None and "digits" not in props:  # an export that does not write the flag yet
        proto.metadata_props.add(key="digits", value=json.dumps(digits))
        onnx.save(proto, str(folder / "model.onnx"))
    return folder


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("colour"))


def model_path(folder, backend):
    return str(folder / "model.onnx") if backend == "onnxruntime" else str(folder)


def png(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def solid(rgb, size=(48, 64)):
    """A uint8 (H, W, 3) image of one colour."""
    return np.broadcast_to(np.array(rgb, np.uint8), size + (3,)).copy()


def dark_on_light(size=(48, 64)):
    """A photo-like image: a dark shape on a light background (a digit model would invert it)."""
    img = solid((235, 235, 225), size)
    img[12:36, 20:44] = (20, 30, 40)
    return img


COLOURS = {"stop": (255, 0, 0), "go": (0, 255, 0), "water": (0, 0, 255), "night": (0, 0, 0), "snow": (255, 255, 255)}


# ---- decoding -------------------------------------------------------------------------------------------

def test_images_are_decoded_to_the_models_channels_in_rgb_order():
    red = decode_pixels(png(solid((255, 0, 0))), InputSpec(SHAPE, digits=False))
    assert red.pixels.shape == SHAPE and red.pixels.dtype == np.float32 and red.size == (64, 48)
    np.testing.assert_array_equal(red.pixels.reshape(3, -1).mean(axis=1), [1, 0, 0])  # red reaches channel 0
    mixed = solid((10, 128, 250))
    got = decode_pixels(png(mixed), InputSpec(SHAPE, digits=False)).pixels
    np.testing.assert_allclose(got[:, 5, 5], np.array([10, 128, 250]) / 255, atol=1e-6)
    # grey -> RGB: the grey value in each channel
    grey = decode_pixels(png(np.full((20, 20), 100, np.uint8)), InputSpec(SHAPE, digits=False)).pixels
    np.testing.assert_allclose(grey, 100 / 255, atol=1e-6)
    # RGB -> grey: ITU-R 601 luma (Pillow's L), pure red is 0.299
    as_grey = decode_pixels(png(solid((255, 0, 0))), InputSpec((1, 28, 28), digits=False)).pixels
    assert as_grey.shape == (1, 28, 28) and np.allclose(as_grey, 76 / 255)
    # a JPEG photo (decoded in reduced size where it can be) and an EXIF-free BMP
    for fmt in ("JPEG", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(solid((200, 30, 30), (300, 400))).save(buf, format=fmt)
        got = decode_pixels(buf.getvalue(), InputSpec(SHAPE, digits=False))
        assert got.size == (400, 300) and got.pixels.shape == SHAPE
        assert got.pixels[0].mean() > 0.7 and got.pixels[1:].mean() < 0.2, fmt
    # a photo turned by its EXIF orientation: its size as shown (what a client draws the region on), upright
    turned = solid((0, 0, 0), (30, 80))
    turned[:, :10] = (255, 0, 0)  # a red band on the left, shown on top once turned
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    Image.fromarray(turned).save(buf, format="PNG", exif=exif.tobytes())
    upright = decode_pixels(buf.getvalue(), InputSpec(SHAPE, digits=False))
    assert upright.size == (30, 80) and upright.pixels[0, :3].mean() > 0.9 and upright.pixels[0, -3:].mean() < 0.1
    with pytest.raises(StnGluonError, match="x.png: the model takes 2 channels; images feed 1- or 3-channel"):
        decode_pixels(png(solid((1, 2, 3))), (2, 8, 8), "x.png")


def test_transparency_goes_onto_the_mean_colour_for_photos_and_a_contrasting_one_for_digits():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (0, 0, 255, 255)  # an opaque blue square on a transparent background
    photo = decode_pixels(png(rgba, "RGBA"), InputSpec(SHAPE, digits=False, background=tuple(MEAN)))
    assert photo.rules == ["mean_background"]
    np.testing.assert_allclose(photo.pixels[:, 0, 0], MEAN, atol=1 / 255)  # the corner: the model's mean colour
    np.testing.assert_allclose(photo.pixels[:, 16, 16], [0, 0, 1], atol=1 / 255)
    digit = decode_pixels(png(rgba, "RGBA"), InputSpec(SHAPE, digits=True))
    assert digit.rules == ["contrast_background"]
    np.testing.assert_allclose(digit.pixels[:, 0, 0], [1, 1, 1])  # dark strokes: onto white
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert decode_pixels(png(opaque, "RGBA"), InputSpec(SHAPE, digits=False)).rules == []


def test_the_digit_rules_apply_to_digit_models_only():
    pixels = decode_pixels(png(dark_on_light()), InputSpec(SHAPE)).pixels[None]
    rules = [[]]
    kept, inverted = apply_rules(pixels, rules, digits=False, invert="auto")
    assert inverted.tolist() == [False] and rules == [[]] and kept is pixels
    assert apply_rules(pixels, [[]], digits=False, invert=False)[1].tolist() == [False]
    with pytest.raises(StnGluonError, match="not a digit model") as info:
        apply_rules(pixels, [[]], digits=False, invert=True)
    assert info.value.for_cli().startswith("--invert: ")
    rules = [[]]
    flipped, inverted = apply_rules(pixels, rules, digits=True, invert="auto")
    assert inverted.tolist() == [True] and rules == [["inverted"]]
    np.testing.assert_allclose(flipped, 1 - pixels)


# ---- predictors, predict ----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_predictors_read_classes_per_channel_normalisation_and_digits(backend, colour_model):
    from stn_gluon.serve.predictors import load_predictor, preprocess

    p = load_predictor(model_path(colour_model, backend), backend)
    assert p.classes == CLASSES and p.digits is False and p.mean == MEAN and p.std == STD
    spec = p.input_spec()
    assert spec == InputSpec(SHAPE, False, tuple(np.float32(MEAN).tolist()))
    info = p.info()
    assert info["digits"] is False and info["classes"] == CLASSES and info["mean"] == MEAN
    files = [png(solid(rgb)) for rgb in COLOURS.values()]
    pixels = np.stack([decode_pixels(data, spec).pixels for data in files])
    out = p.predict(preprocess(pixels, p.mean, p.std))
    assert [CLASSES[k] for k in out["probabilities"].argmax(axis=1)] == list(COLOURS)
    assert out["warped"].shape == (5,) + SHAPE
    np.testing.assert_allclose(out["theta"][0], [0.5, 0, 0, 0, 0.5, 0], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_prints_class_names_and_rules(backend, colour_model, tmp_path, capsys):
    model = model_path(colour_model, backend)
    files = []
    for name, rgb in COLOURS.items():
        files.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(solid(rgb)).save(files[-1])
    assert main(["predict", "--model", model, "--backend", backend] + files) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(COLOURS)
    for line, (k, name) in zip(lines, enumerate(COLOURS)):
        assert line.startswith(f"{tmp_path / name}.png: {name} (class {k}, p="), line
        assert float(line.split("p=")[1].split(")")[0]) > 0.9
    light = tmp_path / "light.png"
    Image.fromarray(dark_on_light()).save(light)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:32, 8:32] = (0, 255, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    out_dir = tmp_path / "rectified"
    assert main(["predict", "--model", model, "--json", "--save-rectified", str(out_dir), str(light),
                 str(tmp_path / "cutout.png")]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)["predictions"]
    assert "inverted" not in err and [p["inverted"] for p in got] == [False, False]  # a photo is never inverted
    assert [p["rules"] for p in got] == [[], ["mean_background"]] and got[1]["class"] == "go"
    rectified = Image.open(out_dir / "light_rectified.png")
    assert rectified.mode == "RGB" and rectified.size == (32, 32)
    centre = np.asarray(rectified)[16, 16]  # zoomed 2x on the centre: the dark shape
    assert centre.max() < 80
    assert main(["predict", "--model", model, "--no-invert", str(light)]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", model, "--invert", str(light)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --invert: {model} is not a digit model (digits: false in its metadata); its inputs " \
                  f"are never inverted\n"


def test_infer_onnx_script_reads_colour_images_like_predict(colour_model, tmp_path, capsys):
    """scripts/infer_onnx.py (ONNX Runtime and NumPy only) on a colour model: RGB, no inversion, transparency
    onto the mean colour, EXIF orientation, per-channel normalisation: the classes and probabilities of predict."""
    files = []
    for name, rgb in COLOURS.items():
        files.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(solid(rgb)).save(files[-1])
    Image.fromarray(dark_on_light()).save(tmp_path / "light.png")  # a digit model would invert it
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:32, 8:32] = (0, 255, 0, 255)  # green on transparent: onto the mean colour, it stays "go"
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    big = np.zeros((1100, 1300, 4), np.uint8)  # shrunk before compositing, as predict does
    big[200:900, 300:1000] = (255, 0, 0, 255)
    big[::7, ::5, 3] = 128
    Image.fromarray(big, "RGBA").save(tmp_path / "big.png")
    photo = solid((255, 255, 255), (40, 60))
    photo[:, :20] = (0, 0, 255)  # blue on the left third, turned a quarter by its EXIF orientation
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    noise = np.random.RandomState(0).randint(0, 256, (600, 800, 3)).astype(np.uint8)
    Image.fromarray(noise).resize((200, 150)).resize((800, 600)).save(tmp_path / "large.jpg", quality=90)
    files += [str(tmp_path / n) for n in ("light.png", "cutout.png", "turned.jpg", "big.png", "large.jpg")]
    np.save(tmp_path / "arrays.npy", np.stack([solid(COLOURS["water"], SHAPE[1:]).transpose(2, 0, 1)] * 2))
    files.append(str(tmp_path / "arrays.npy"))
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "infer_onnx.py")
    out = subprocess.run([sys.executable, script, str(colour_model / "model.onnx")] + files, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and not out.stderr, out.stderr
    got = [(line.split(": ")[1].split(" ")[0], float(line.split("p=")[1].split(")")[0]))
           for line in out.stdout.splitlines()]
    assert main(["predict", "--model", str(colour_model / "model.onnx"), "--json"] + files) == 0
    cli = json.loads(capsys.readouterr().out)["predictions"]
    assert [name for name, _ in got] == [p["class"] for p in cli]
    assert [name for name, _ in got][:len(COLOURS)] == list(COLOURS) and got[len(COLOURS) + 1][0] == "go"
    np.testing.assert_allclose([p for _, p in got], [max(p["probabilities"]) for p in cli], atol=2e-3)
    # the pixels themselves, before normalisation: the script's loader against predict's
    spec = importlib.util.spec_from_file_location("infer_onnx", script)
    infer_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer_onnx)
    ours = np.concatenate([infer_onnx.load(f, *SHAPE, digits=False, background=MEAN) for f in files])
    theirs = read_inputs(files, InputSpec(SHAPE, False, tuple(MEAN))).pixels
    assert ours.shape == theirs.shape == (len(files) + 1,) + SHAPE
    assert np.abs(ours - theirs).max() <= 1.5 / 255
    assert ours[len(COLOURS)].min() < 0.2  # the dark shape of a photo stays dark
    # an array in another layout is refused in one line, not read scrambled: (H, W, 3), a (6, H, W) stack, flat
    for name, arr in (("hwc", solid(COLOURS["go"], SHAPE[1:])), ("six", np.zeros((6,) + SHAPE[1:], np.uint8)),
                      ("flat", np.zeros(int(np.prod(SHAPE)), np.uint8)), ("empty", np.zeros((0,) + SHAPE))):
        np.save(tmp_path / f"{name}.npy", arr)
        out = subprocess.run([sys.executable, script, str(colour_model / "model.onnx"), str(tmp_path / f"{name}.npy")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "does not fit the model's input (3, 32, 32)" in out.stderr, (name, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and not out.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_without_the_digits_flag_keeps_the_digit_rules(backend, colour_model, tmp_path, capsys):
    import onnx

    legacy = tmp_path / "legacy"
    shutil.copytree(colour_model, legacy)
    meta = json.loads((legacy / "model.json").read_text())
    del meta["digits"]
    (legacy / "model.json").write_text(json.dumps(meta))
    proto = onnx.load(str(legacy / "model.onnx"))
    kept = [p for p in proto.metadata_props if p.key != "digits"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(legacy / "model.onnx"))
    light = tmp_path / "light.png"
    Image.fromarray(dark_on_light()).save(light)
    assert main(["predict", "--model", model_path(legacy, backend), "--backend", backend, "--json", str(light)]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)["predictions"][0]
    assert got["inverted"] is True and got["rules"] == ["inverted"] and "note: inverted 1 of 1" in err
    batch = read_inputs([str(light)], SHAPE)  # a bare shape: a digit model's spec
    assert batch.names == [str(light)] and batch.sizes == [(64, 48)] and batch.rules == [[]]


# ---- the server ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colour_servers(colour_model):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both start at once
        started = dict(zip(BACKENDS, pool.map(lambda b: Server(model_path(colour_model, b), backend=b), BACKENDS)))
    yield started
    for server in started.values():
        code, _, err = server.stop()
        assert code == 0, err


def _image(doc_field):
    return Image.open(io.BytesIO(base64.b64decode(doc_field)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_server_reads_colour_images_and_names_their_classes(backend, colour_servers):
    server = colour_servers[backend]
    status, info = server.json("GET", "/v1/model")
    assert status == 200 and info["digits"] is False and info["classes"] == CLASSES and info["mean"] == MEAN
    status, doc = server.json("POST", "/v1/predict?return_image=1&return_input=1&return_grid=1",
                              png(solid((255, 0, 0), (48, 96))), {"Content-Type": "image/png"})
    assert status == 200, doc
    p = doc["predictions"][0]
    assert (p["class"], p["label"], p["inverted"], p["rules"], p["source_size"]) == ("stop", 0, False, [], [96, 48])
    seen = _image(p["input_image"])
    assert seen.mode == "RGB" and seen.size == (32, 32) and np.asarray(seen)[5, 5].tolist() == [255, 0, 0]
    rectified = _image(p["image"])
    assert rectified.mode == "RGB" and np.asarray(rectified)[16, 16].tolist() == [255, 0, 0]
    # the region: the central half of the input, in input pixels; scaled by source_size / 32 onto the photo
    xs, ys = np.asarray(p["grid"]["outline"]).T
    np.testing.assert_allclose([xs.min(), xs.max(), ys.min(), ys.max()], [8.25, 23.75, 8.25, 23.75], atol=0.01)
    # a photo, dark on light: not inverted; invert=1 refused; multipart names each class
    status, doc = server.json("POST", "/v1/predict", png(dark_on_light()), {"Content-Type": "image/png"})
    assert status == 200 and doc["predictions"][0]["inverted"] is False and doc["predictions"][0]["rules"] == []
    status, doc = server.json("POST", "/v1/predict?invert=1", png(dark_on_light()), {"Content-Type": "image/png"})
    assert status == 400 and "not a digit model" in doc["error"]
    boundary = "colourboundary"
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{k}\"; filename=\"{name}.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n".encode() + png(solid(rgb)) + b"\r\n"
                    for k, (name, rgb) in enumerate(COLOURS.items())) + f"--{boundary}--\r\n".encode()
    status, doc = server.json("POST", "/v1/predict", body,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and [p["class"] for p in doc["predictions"]] == list(COLOURS)
    # JSON instances: (C, H, W) each, no rules, no source_size
    instances = [np.broadcast_to(np.array(rgb, float).reshape(3, 1, 1) / 255, SHAPE).tolist()
                 for rgb in COLOURS.values()]
    status, doc = server.json("POST", "/v1/predict", json.dumps({"instances": instances}),
                              {"Content-Type": "application/json"})
    assert status == 200 and [p["class"] for p in doc["predictions"]] == list(COLOURS)
    assert all(p["rules"] == [] and "source_size" not in p for p in doc["predictions"])
