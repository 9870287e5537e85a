"""Inputs read the way a person meant them: transparency, polarity, one array validator, clear errors."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stn_gluon.cli import main
from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.export.onnx import OPSET
from stn_gluon.serve.inputs import (apply_polarity, decode_image, load_inputs, looks_dark_on_light, parse_invert,
                              validate_array)

HERE = os.path.dirname(__file__)
SHAPE = (1, 28, 28)


def png(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def render(digit, how):
    """A MNIST digit (uint8, white on black) as PNG bytes drawn ``how``."""
    if how == "white_on_black":
        return png(digit)
    if how == "black_on_white":
        return png(255 - digit)
    rgba = np.zeros(digit.shape + (4,), np.uint8)  # black strokes, the digit's ink as opacity: a browser canvas
    rgba[..., 3] = digit
    return png(rgba, "RGBA")


RENDERINGS = ("white_on_black", "black_on_white", "transparent")


# ---- images: transparency and polarity ------------------------------------------------------------------

@pytest.mark.parametrize("how", RENDERINGS)
def test_each_rendering_reads_back_as_the_original_digit(how, sample):
    digits = sample.test_images[:50]
    pixels = np.stack([decode_image(render(d, how), (28, 28))[None] for d in digits])
    fixed, inverted = apply_polarity(pixels, "auto")
    assert inverted.tolist() == [how != "white_on_black"] * 50
    np.testing.assert_allclose(fixed[:, 0], digits / 255.0, atol=1.5 / 255)


def test_transparency_modes_and_light_ink(sample):
    digit = sample.test_images[0]
    want = digit / 255.0
    la = np.stack([np.zeros_like(digit), digit], axis=-1)  # grey + alpha, black ink
    got = decode_image(png(la, "LA"), (28, 28))
    assert looks_dark_on_light(got) and np.abs((1 - got) - want).max() <= 1.5 / 255
    # a palette image whose background index is transparent (tRNS), ink drawn in black
    pal = Image.fromarray(np.where(digit > 127, 1, 0).astype(np.uint8), "P")
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    got = decode_image(buf.getvalue(), (28, 28))
    assert looks_dark_on_light(got) and np.array_equal(1 - got > 0.5, digit > 127)
    # white strokes on transparency: composited onto black, left as they are
    rgba = np.full(digit.shape + (4,), 255, np.uint8)
    rgba[..., 3] = digit
    got = decode_image(png(rgba, "RGBA"), (28, 28))
    assert not looks_dark_on_light(got) and np.abs(got - want).max() <= 1.5 / 255
    # an opaque RGBA image is read like its RGB self
    opaque = np.dstack([digit] * 3 + [np.full_like(digit, 255)])
    np.testing.assert_array_equal(decode_image(png(opaque, "RGBA"), (28, 28)), decode_image(png(digit), (28, 28)))


def test_polarity_on_real_digits_thin_strokes_and_edges(sample):
    digits = sample.test_images[:500] / 255.0
    assert not any(looks_dark_on_light(d) for d in digits)
    assert all(looks_dark_on_light(1 - d) for d in digits)
    # thin strokes: one-pixel skeletons, light on dark and dark on light
    thin = np.zeros((28, 28))
    thin[4:24, 14] = 1.0
    thin[4, 10:15] = 1.0
    assert not looks_dark_on_light(thin) and looks_dark_on_light(1 - thin)
    # a digit cropped tightly, its strokes touching every edge
    tight = np.asarray(Image.fromarray(sample.test_images[1][4:24, 4:24]).resize((28, 28))) / 255.0
    assert not looks_dark_on_light(tight) and looks_dark_on_light(1 - tight)
    # a photo-like grey paper (0.8) with dark ink, and the noisy128 kind of background
    paper = 0.8 - 0.6 * digits[2]
    assert looks_dark_on_light(paper)
    noise = np.clip(np.abs(np.random.RandomState(0).normal(0, 60, (128, 128))), 0, 255) / 255.0
    assert not looks_dark_on_light(noise)
    # blank images are left alone
    assert not looks_dark_on_light(np.ones((28, 28))) and not looks_dark_on_light(np.zeros((28, 28)))


def test_apply_polarity_forced_and_parse_invert():
    pixels = np.stack([np.zeros(SHAPE), np.ones(SHAPE) * 0.9]).astype(np.float32)
    pixels[1, 0, 10:18, 10:18] = 0.0
    out, flags = apply_polarity(pixels, "auto")
    assert flags.tolist() == [False, True] and out[1, 0, 0, 0] == pytest.approx(0.1)
    assert apply_polarity(pixels, True)[1].tolist() == [True, True]
    out, flags = apply_polarity(pixels, False)
    assert flags.tolist() == [False, False] and out is pixels
    for text, want in (("auto", "auto"), ("AUTO", "auto"), ("1", True), ("true", True), ("yes", True),
                       ("0", False), ("False", False), ("no", False)):
        assert parse_invert(text) == want
    for bad in ("2", "", "maybe", "none"):
        with pytest.raises(StnGluonError, match="expected auto, 1 or 0"):
            parse_invert(bad)


# ---- the one array validator ----------------------------------------------------------------------------

def test_validate_array_accepts():
    d = np.arange(784, dtype=np.uint8).reshape(28, 28)
    np.testing.assert_allclose(validate_array(d, SHAPE)[0, 0], d / 255.0, rtol=1e-6)
    assert validate_array(np.zeros((5, 28, 28), np.float32), SHAPE).shape == (5, 1, 28, 28)
    assert validate_array(np.ones((2, 1, 28, 28), bool), SHAPE).max() == 1.0
    floats = d.astype(np.float32)
    np.testing.assert_allclose(validate_array(floats, SHAPE, "0-255"), validate_array(d, SHAPE), atol=1e-7)
    assert validate_array(np.ones((3, 28, 28)), (3, 28, 28)).shape == (1, 3, 28, 28)


@pytest.mark.parametrize("array, pixel_range, expect", [
    (np.full((28, 28), 255.0, np.float32), "auto", r"values span \[255, 255\], outside pixel_range 0-1; pass "
                                                   r"pixel_range 0-255"),
    (np.arange(784, dtype=np.int64).reshape(28, 28) % 256, "auto", r"values span \[0, 255\]"),
    (np.full((28, 28), 300.0), "0-255", r"values span \[300, 300\], outside pixel_range 0-255$"),
    (np.full((28, 28), -0.5), "0-1", r"values span \[-0.5, -0.5\], outside pixel_range 0-1$"),
    (np.full((28, 28), 200, np.uint8), "0-1", r"values span \[200, 200\]"),
    (np.full((28, 28), np.nan, np.float32), "auto", "NaN or infinite"),
    (np.full((28, 28), np.inf), "0-255", "NaN or infinite"),
    (np.array([["a"] * 28] * 28), "auto", "expected numbers, got <U1"),
    (np.zeros((28, 28), complex), "auto", "expected real numbers"),
    (np.zeros((0, 28, 28)), "auto", "empty array"),
    (np.zeros((27, 28)), "auto", r"shape \(27, 28\) does not fit"),
    (np.zeros((2, 3, 28, 28)), "auto", "3 channel|does not fit"),
    (np.zeros((28, 28)), "0-100", "pixel range '0-100'"),
])
def test_validate_array_refuses_with_one_line(array, pixel_range, expect):
    with pytest.raises(StnGluonError, match=expect) as info:
        validate_array(array, SHAPE, pixel_range, "x.npy")
    assert str(info.value).startswith("x.npy: ") and "\n" not in str(info.value)


def test_load_inputs_errors_name_the_file(tmp_path):
    (tmp_path / "text.png").write_text("hello, not an image")
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "trunc.png").write_bytes(png(np.zeros((28, 28), np.uint8))[:40])
    for name, expect in (("text.png", "text.png: not a readable image (unknown or damaged format"),
                         ("empty.png", "empty.png: not a readable image"),
                         ("trunc.png", "trunc.png: not a readable image"),
                         ("folder", "folder: is a folder; give image or .npy files"),
                         ("missing.png", "missing.png: file not found")):
        with pytest.raises(StnGluonError) as info:
            load_inputs([str(tmp_path / name)], SHAPE)
        message = str(info.value)
        assert expect in message and "BytesIO" not in message and " 0x" not in message, message
    np.save(tmp_path / "f.npy", np.full((2, 28, 28), 255.0, np.float32))
    pixels, names = load_inputs([str(tmp_path / "f.npy")], SHAPE, "0-255")
    assert names == [f"{tmp_path / 'f.npy'}[0]", f"{tmp_path / 'f.npy'}[1]"] and pixels.max() == 1.0


# ---- the CLI ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_flags_note_and_errors(served_model, sample, tmp_path, capsys):
    model = str(served_model / "model.onnx")
    digit = sample.test_images[0]
    (tmp_path / "w.png").write_bytes(render(digit, "white_on_black"))
    (tmp_path / "b.png").write_bytes(render(digit, "black_on_white"))
    w, b = str(tmp_path / "w.png"), str(tmp_path / "b.png")
    assert main(["predict", "--model", model, "--json", w, b]) == 0
    out, err = capsys.readouterr()
    auto = json.loads(out)["predictions"]
    assert [p["inverted"] for p in auto] == [False, True] and auto[0]["label"] == auto[1]["label"]
    assert err.strip() == f"note: inverted 1 of 2 input(s) that look dark on light ({b}); --no-invert keeps " \
                          f"them as they are"
    assert main(["predict", "--model", model, "--json", "--no-invert", w, b]) == 0
    out, err = capsys.readouterr()
    kept = json.loads(out)["predictions"]
    assert [p["inverted"] for p in kept] == [False, False] and err == ""
    assert kept[1]["probabilities"] != auto[1]["probabilities"]
    assert main(["predict", "--model", model, "--json", "--invert", w, b]) == 0
    forced = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["inverted"] for p in forced] == [True, True]
    # w inverted is b as it is (to the 6 decimals printed: a batch's float32 sums may differ in the last bit)
    np.testing.assert_allclose(forced[0]["probabilities"], kept[1]["probabilities"], rtol=0, atol=2e-6)
    assert main(["predict", "--model", model, b]) == 0
    assert capsys.readouterr().out.rstrip().endswith("(inverted)")
    # arrays: float 0..255 refused unless declared; uint8 is 0..255
    np.save(tmp_path / "f255.npy", digit.astype(np.float32))
    np.save(tmp_path / "u8.npy", digit)
    assert main(["predict", "--model", model, str(tmp_path / "f255.npy")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'f255.npy'}: values span [0, 255], outside --pixel-range 0-1; pass " \
                  f"--pixel-range 0-255 for 0..255 values\n"
    for extra, path in ((["--pixel-range", "0-255"], "f255.npy"), ([], "u8.npy"), (["--pixel-range", "auto"], "u8.npy")):
        assert main(["predict", "--model", model, "--json"] + extra + [str(tmp_path / path)]) == 0
        got = json.loads(capsys.readouterr().out)["predictions"][0]
        assert got["probabilities"] == auto[0]["probabilities"] and got["inverted"] is False
    assert main(["predict", "--model", model, "--pixel-range", "0-1", str(tmp_path / "u8.npy")]) == 2
    assert "outside --pixel-range 0-1" in capsys.readouterr().err


@pytest.mark.parametrize("make, expect", [
    (lambda p: p.mkdir(), "is a folder; give image or .npy files"),
    (lambda p: p.write_text("hello"), "not a readable image (unknown or damaged format"),
])
@pytest.mark.slow
def test_predict_input_errors_are_one_line_in_a_real_process(make, expect, served_model, tmp_path):
    target = tmp_path / "digits.png"
    make(target)
    out = subprocess.run([sys.executable, "-m", "stn_gluon", "predict", "--model", str(served_model / "model.onnx"),
                          str(target)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith(f"error: {target}: ") and expect in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr and out.stdout == ""


def test_predictor_info_for_both_backends(served_model):
    from stn_gluon.serve.predictors import load_predictor
    from stn_gluon._runtime.files import sha256_file

    onnx_info = load_predictor(str(served_model / "model.onnx")).info()
    assert onnx_info["backend"] == "onnxruntime" and onnx_info["opset"] == OPSET
    assert onnx_info["files"] == {"model.onnx": sha256_file(str(served_model / "model.onnx"))}
    mx_info = load_predictor(str(served_model), "mxnet").info()
    assert mx_info["backend"] == "mxnet" and mx_info["epoch"] == 0 and mx_info["symbol"] == "model-symbol.json"
    assert mx_info["files"]["model-0000.params"] == sha256_file(str(served_model / "model-0000.params"))
    for info in (onnx_info, mx_info):
        assert info["input_shape"] == [None, 1, 28, 28] and len(info["classes"]) == 10
        assert 0 <= info["mean"] <= 1 and info["std"] > 0


# ---- 500 real digits, three renderings, both backends ---------------------------------------------------

@pytest.fixture(scope="module")
def rendered(sample, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rendered")
    digits = sample.test_images[:500]
    files = {}
    for how in RENDERINGS:
        (folder / how).mkdir()
        files[how] = []
        for i, d in enumerate(digits):
            path = folder / how / f"{i:03d}.png"
            path.write_bytes(render(d, how))
            files[how].append(str(path))
    return digits, files, folder


@pytest.mark.slow
def test_500_real_digits_three_renderings_both_backends(served_model, rendered, sample, capsys):
    from stn_gluon.serve.predictors import load_predictor, preprocess

    digits, files, folder = rendered
    models = {"onnxruntime": str(served_model / "model.onnx"), "mxnet": str(served_model)}
    original = {}
    for backend, model in models.items():
        p = load_predictor(model, backend)
        x = preprocess(validate_array(digits, p.input_shape), p.mean, p.std)
        original[backend] = p.predict(x)["probabilities"].argmax(axis=1)
        assert (original[backend] == sample.test_labels[:500]).mean() >= 0.8  # the agreement below means something
    for how in RENDERINGS:
        for backend, model in models.items():
            assert main(["predict", "--model", model, "--backend", backend, "--json"] + files[how]) == 0
            out, err = capsys.readouterr()
            got = json.loads(out)["predictions"]
            labels = np.array([p["label"] for p in got])
            assert (labels == original[backend]).mean() >= 0.99, (how, backend)
            assert np.mean([p["inverted"] == (how != "white_on_black") for p in got]) >= 0.99
            assert ("note: inverted 500 of 500" in err) == (how != "white_on_black")
    # forcing no inversion on the black-on-white digits answers wrongly: the check above is a real one
    assert main(["predict", "--model", models["onnxruntime"], "--json", "--no-invert"] + files["black_on_white"]) == 0
    wrong = np.array([p["label"] for p in json.loads(capsys.readouterr().out)["predictions"]])
    assert (wrong == original["onnxruntime"]).mean() < 0.5
    # one real `stn-gluon predict` process per rendering, the backends taking turns
    for how, backend in zip(RENDERINGS, ("onnxruntime", "mxnet", "onnxruntime")):
        out = subprocess.run([sys.executable, "-m", "stn_gluon", "predict", "--model", models[backend], "--backend",
                              backend, "--json"] + files[how], capture_output=True, text=True, timeout=300, cwd=folder)
        assert out.returncode == 0, out.stderr
        labels = np.array([p["label"] for p in json.loads(out.stdout)["predictions"]])
        assert (labels == original[backend]).mean() >= 0.99, (how, backend)


def test_infer_onnx_script_reads_the_renderings_like_predict(served_model, rendered, capsys):
    _, files, folder = rendered
    model = str(served_model / "model.onnx")
    script = os.path.join(HERE, "..", "scripts", "infer_onnx.py")
    probe = ("import sys, runpy\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as e:\n    print('EXIT', e.code)\n"
             "print('IMPORTED', [m for m in ('mxnet', 'stn_gluon', 'onnx') if m in sys.modules])\n")
    chosen = [f for how in RENDERINGS for f in files[how][:20]]
    out = subprocess.run([sys.executable, "-c", probe, script, model] + chosen, capture_output=True, text=True,
                         timeout=120, cwd=folder)
    assert "EXIT 0" in out.stdout and "IMPORTED []" in out.stdout, out.stderr
    script_labels = [line.split(": ")[1].split(" ")[0] for line in out.stdout.splitlines() if "(p=" in line]
    assert main(["predict", "--model", model, "--json"] + chosen) == 0
    cli = json.loads(capsys.readouterr().out)["predictions"]
    assert script_labels == [p["class"] for p in cli]
    (folder / "text.png").write_text("not an image")
    for bad, expect in (("text.png", "not a readable image"), (".", "is a folder")):
        out = subprocess.run([sys.executable, script, model, bad], capture_output=True, text=True, timeout=120,
                             cwd=folder)
        assert out.returncode == 2 and expect in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_photo_orientation_is_applied():
    pixels = np.zeros((28, 28), np.uint8)
    pixels[2:6, 2:26] = 255  # a bar along the top
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        img.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
        got = decode_image(buf.getvalue(), (28, 28))
        assert got[:, -6:-2].mean() > 0.8 and got[2:6, :].mean() < 0.3, fmt  # the bar now stands on the right


# ---- untrusted model folders: metadata paths, read once, no swallowed errors ------------------------------

def _one_line_refusal(args, cwd):
    out = subprocess.run([sys.executable, "-m", "stn_gluon"] + [str(a) for a in args], capture_output=True,
                         text=True, timeout=120, cwd=cwd)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def _onnx_with_metadata(served_model, folder, **props):
    """A copy of the served model's folder whose model.onnx metadata has ``props`` set."""
    import shutil

    import onnx

    shutil.copytree(served_model, folder)
    model = onnx.load(str(folder / "model.onnx"))
    for entry in model.metadata_props:
        if entry.key in props:
            entry.value = props[entry.key]
    onnx.save(model, str(folder / "model.onnx"))
    return folder / "model.onnx"


@pytest.mark.parametrize("name", ["/proc/kcore", "../model-0000.params", "sub/model-0000.params", "..", ""])
@pytest.mark.slow
def test_a_params_file_outside_the_models_folder_is_refused(served_model, tmp_path, name):
    from stn_gluon._runtime.errors import CheckpointError
    from stn_gluon.serve.predictors import load_predictor

    onnx_file = _onnx_with_metadata(served_model, tmp_path / "m", params_file=name)
    with pytest.raises(CheckpointError, match="not a file name beside it; refusing a path outside"):
        load_predictor(str(onnx_file))
    if name == "/proc/kcore":  # the command: one line, at once (reading /proc/kcore would hang it)
        line = _one_line_refusal(["predict", "--model", onnx_file, tmp_path / "nothing.png"], tmp_path)
        assert "params_file '/proc/kcore' is not a file name beside it" in line


def test_a_params_file_linked_out_of_the_folder_is_refused(served_model, tmp_path):
    from stn_gluon._runtime.errors import CheckpointError
    from stn_gluon.serve.predictors import load_predictor

    elsewhere = tmp_path / "elsewhere.params"
    elsewhere.write_bytes((served_model / "model-0000.params").read_bytes())
    onnx_file = _onnx_with_metadata(served_model, tmp_path / "m")
    (tmp_path / "m" / "model-0000.params").unlink()
    (tmp_path / "m" / "model-0000.params").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match=r"params_file model-0000\.params leads outside the model's folder"):
        load_predictor(str(onnx_file))


def test_an_onnx_file_onnx_cannot_read_fails_the_staleness_check(served_model, tmp_path):
    import shutil

    from stn_gluon._runtime.errors import CheckpointError
    from stn_gluon.export.saved import check_onnx_current, onnx_weights_mismatch
    from stn_gluon.train.runs import drop_stale_derived

    folder = tmp_path / "m"
    shutil.copytree(served_model, folder)
    (folder / "model.onnx").write_bytes(b"\x08\x07 not a protobuf" * 16)
    for call in (lambda: onnx_weights_mismatch(str(folder / "model.onnx"), str(folder)),
                 lambda: check_onnx_current(str(folder / "model.onnx"), str(folder / "model.onnx"))):
        with pytest.raises(CheckpointError, match=r"model\.onnx: not a readable ONNX model \("):
            call()
    line = _one_line_refusal(["predict", "--model", folder, "--backend", "onnxruntime", "x.png"], tmp_path)
    assert "model.onnx: not a loadable ONNX model" in line
    # after a retraining, an unreadable model.onnx in the run is removed (it is no export of the new weights)
    assert drop_stale_derived(str(folder)) == [str(folder / "model.onnx")]


def test_each_model_file_is_read_once_and_the_bytes_checked_are_the_bytes_loaded(served_model, tmp_path,
                                                                                 monkeypatch):
    import shutil

    import mxnet as mx

    from stn_gluon.export import saved
    from stn_gluon._runtime.files import sha256_file
    from stn_gluon.serve.predictors import load_predictor

    folder = tmp_path / "m"
    shutil.copytree(served_model, folder)
    params = folder / "model-0000.params"
    original = params.read_bytes()
    verify = saved.verify_checksums

    def verify_then_swap(meta, files, described, contents=None):
        verify(meta, files, described, contents)
        # the file is replaced between the check and the load: what loads must be what was checked
        arrays = mx.nd.load(str(params))
        mx.nd.save(str(params), {k: v * 0 for k, v in arrays.items()})

    monkeypatch.setattr(saved, "verify_checksums", verify_then_swap)
    monkeypatch.setattr(saved, "sha256_file", lambda path: pytest.fail(f"{path} hashed apart from its loading"))
    model = saved.load_model(str(folder))
    assert model.sha256 == {"model-symbol.json": sha256_file(str(folder / "model-symbol.json")),
                            "model-0000.params": hashlib_sha256(original)}
    x = mx.nd.array(np.random.RandomState(0).randn(4, *SHAPE).astype(np.float32))
    reference = saved.load_model(str(served_model)).net(x).asnumpy()
    np.testing.assert_array_equal(model.net(x).asnumpy(), reference)  # the checked weights, not the zeros
    monkeypatch.undo()
    predictor = load_predictor(str(served_model / "model.onnx"))
    assert predictor.info()["files"] == {"model.onnx": sha256_file(str(served_model / "model.onnx"))}


def hashlib_sha256(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_save_rectified_refuses_two_inputs_that_would_share_a_file(served_model, sample, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "1.png").write_bytes(render(sample.test_images[0], "white_on_black"))
    line = _one_line_refusal(["predict", "--model", served_model / "model.onnx", "--save-rectified", "out",
                              "a/1.png", "b/1.png"], tmp_path)
    assert line == f"error: --save-rectified: a/1.png and b/1.png would both be saved as out/1_rectified.png; " \
                   f"rename one, or run predict once per folder"
    assert not (tmp_path / "out").exists()
    (tmp_path / "b" / "1.png").rename(tmp_path / "b" / "2.png")  # distinct names: one file each
    assert main(["predict", "--model", str(served_model / "model.onnx"), "--save-rectified", str(tmp_path / "out"),
                 str(tmp_path / "a" / "1.png"), str(tmp_path / "b" / "2.png")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["1_rectified.png", "2_rectified.png"]


def test_looks_dark_on_light_matches_its_definition_with_numpy_median():
    """The per-request check computes the border's median with np.partition: the same answer as np.median."""
    def reference(image):
        grey = image.mean(axis=0)
        k = max(1, min(grey.shape) // 14)
        frame = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])
        return np.median(frame) >= 0.5 and grey.mean() < np.median(frame) - 1e-3

    rs = np.random.RandomState(0)
    images = [rs.rand(c, h, w).astype(np.float32) ** p for c, h, w in ((1, 28, 28), (3, 32, 40), (1, 9, 64))
              for p in (0.25, 1.0, 4.0) for _ in range(20)]
    images += [np.full((1, 28, 28), 0.7, np.float32), np.zeros((3, 28, 28), np.float32)]
    got = [looks_dark_on_light(image) for image in images]
    assert got == [bool(reference(image)) for image in images] and 0 < sum(got) < len(got)
