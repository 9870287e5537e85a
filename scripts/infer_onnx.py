#!/usr/bin/env python
"""Classify digits with an exported STN model using nothing but ONNX Runtime and NumPy (and Pillow for images).

    python scripts/infer_onnx.py runs/demo/model.onnx digit.png [more.png digits.npy ...]

Each file is an image (PNG, JPEG, ...; needs Pillow) or a ``.npy`` array
``(28, 28)`` / ``(N, 28, 28)``: uint8 0..255 or float 0..1. Both go through one
loader that reads them as ``stn-gluon predict`` does: transparency composited
onto a background contrasting with the strokes, grey, resized, and a
dark-on-light input (light border) inverted to MNIST's light on dark. The
model's own metadata says how to normalise them.
"""
import io
import json
import os
import sys

import numpy as np
import onnxruntime as ort


class InputError(Exception):
    """A file that is not a readable input."""


def _image(data, path, h, w):
    try:
        from PIL import Image
    except ImportError:
        raise InputError(f"{path}: reading images needs Pillow (pip install pillow); or give a .npy") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except Exception as err:  # Pillow raises several types for bad data
        raise InputError(f"{path}: not a readable image ({type(err).__name__})") from None
    grey, alpha = rgba[..., :3].mean(axis=2), rgba[..., 3]
    ink = float((grey * alpha).sum() / max(float(alpha.sum()), 1e-6))
    grey = grey * alpha + (1.0 if ink < 0.5 else 0.0) * (1.0 - alpha)  # transparency onto a contrasting background
    small = Image.fromarray((grey * 255 + 0.5).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(small, dtype=np.float32)[None] / 255.0


def _array(data, path):
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy file ({str(err).splitlines()[0][:80]})") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise InputError(f"{path}: expected numbers, got {arr.dtype}")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: contains NaN or infinite values")
    if arr.size and (arr.min() < 0 or arr.max() > scale):
        raise InputError(f"{path}: values span [{arr.min():g}, {arr.max():g}], outside pixel_range "
                         f"{'0-255' if scale == 255 else '0-1'}")
    return (arr / scale).astype(np.float32)


def load(path, c, h, w):
    """One input file -> pixels ``float32 (N, C, H, W)`` in [0, 1], light on dark."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder; give image or .npy files")
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as f:
        data = f.read()
    pixels = _array(data, path) if path.lower().endswith(".npy") else _image(data, path, h, w)
    try:
        pixels = pixels.reshape(-1, c, h, w)
    except ValueError:
        raise InputError(f"{path}: shape {pixels.shape} does not fit the model's input ({c}, {h}, {w})") from None
    k = max(1, min(h, w) // 14)
    for i, img in enumerate(pixels):
        grey = img.mean(axis=0)
        frame = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])
        background = float(np.median(frame))
        if background >= 0.5 and float(grey.mean()) < background - 1e-3:  # dark on light
            pixels[i] = 1.0 - img
    return pixels


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    session = ort.InferenceSession(argv[0], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    classes = json.loads(meta["classes"])
    _, c, h, w = json.loads(meta["input_shape"])
    outputs = [o.name for o in session.get_outputs()]
    for path in argv[1:]:
        x = ((load(path, c, h, w) - mean) / std).astype(np.float32)
        result = dict(zip(outputs, session.run(outputs, {meta["input_name"]: x})))
        for i, probs in enumerate(result["probabilities"]):
            label = int(np.argmax(probs))
            line = f"{path}[{i}]: {classes[label]} (p={probs[label]:.4f})"
            if "theta" in result:
                line += " theta " + np.array2string(result["theta"][i], precision=3, separator=", ")
            print(line)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (InputError, OSError, ValueError, KeyError, ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.NoSuchFile, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
