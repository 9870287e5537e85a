#!/usr/bin/env python
"""Classify images with an exported STN model using nothing but ONNX Runtime and NumPy (and Pillow for images).

    python scripts/infer_onnx.py runs/demo/model.onnx digit.png [more.png digits.npy ...]

Each file is an image (PNG, JPEG, ...; needs Pillow) or a ``.npy`` array
``(H, W)``, ``(N, H, W)`` (grey models), ``(C, H, W)`` or ``(N, C, H, W)``:
uint8 0..255 or float 0..1. Both go through one loader that reads them as
``stn-gluon predict`` does: a photo turned upright as its EXIF orientation
says, transparency composited, the model's channels (grey, or RGB for a
3-channel model), resized to its input. A digit model's inputs (the model's
``digits`` metadata; files from before it are digit models) also get the digit
rules: transparency onto a background contrasting with the strokes, and a
dark-on-light input (light border) inverted to MNIST's light on dark; any
other model's transparency goes onto its mean colour, and nothing is inverted.
The model's own metadata says how to normalise them.
"""
import io
import json
import os
import sys

import numpy as np
import onnxruntime as ort


class InputError(Exception):
    """A file that is not a readable input."""


def _image(data, path, c, h, w, background):
    """Image bytes -> ``float32 (C, H, W)`` in [0, 1]. background: the colour transparency goes onto (three
    values in [0, 1]), or None for a digit model's (white or black, contrasting with what is drawn)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise InputError(f"{path}: reading images needs Pillow (pip install pillow); or give a .npy") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            transparent = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
            if not transparent:
                img.draft("L" if c == 1 else "RGB", (max(h, w), max(h, w)))  # JPEG: decoded smaller, as predict
            img = ImageOps.exif_transpose(img)  # a photo as the camera held it
            if transparent:
                rgba = img.convert("RGBA")
                factor = -(-max(rgba.size) // max(512, 8 * max(h, w)))  # as predict: shrunk first, memory bounded
                rgba = np.asarray(rgba.reduce(factor) if factor > 1 else rgba, dtype=np.float32) / 255.0
                colour, alpha = background, rgba[..., 3:]
                if colour is None:  # a digit model: the mean brightness of what is drawn decides
                    ink = float((rgba[..., :3].mean(axis=2, keepdims=True) * alpha).sum() / max(float(alpha.sum()), 1e-6))
                    colour = [1.0 if ink < 0.5 else 0.0] * 3
                flat = rgba[..., :3] * alpha + np.asarray(colour, np.float32) * (1.0 - alpha)
                img = Image.fromarray((np.clip(flat, 0, 1) * 255.0 + 0.5).astype(np.uint8), "RGB")
            if c not in (1, 3):
                raise InputError(f"{path}: the model takes {c} channels; images feed 1- or 3-channel models, "
                                 f"give a .npy array")
            small = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            pixels = np.asarray(small, dtype=np.float32) / 255.0
    except InputError:
        raise
    except Exception as err:  # Pillow raises several types for bad data
        raise InputError(f"{path}: not a readable image ({type(err).__name__})") from None
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


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


def _batch(pixels, path, c, h, w):
    """``(H, W)``, ``(N, H, W)`` (grey models) or ``(C, H, W)`` (others), ``(N, C, H, W)`` -> ``(N, C, H, W)``;
    any other shape is refused (an ``(H, W, 3)`` array is not read as channels first)."""
    if pixels.size and pixels.shape == (h, w):
        return pixels[None, None]
    if pixels.size and pixels.ndim == 3 and pixels.shape[1:] == (h, w) and (c == 1 or pixels.shape[0] == c):
        return pixels[:, None] if c == 1 else pixels[None]
    if pixels.size and pixels.ndim == 4 and pixels.shape[1:] == (c, h, w):
        return pixels
    raise InputError(f"{path}: shape {pixels.shape} does not fit the model's input ({c}, {h}, {w}): give "
                     f"(H, W){', (N, H, W)' if c == 1 else ''}, (C, H, W) or (N, C, H, W)")


def load(path, c, h, w, digits=True, background=(0.0, 0.0, 0.0)):
    """One input file -> pixels ``float32 (N, C, H, W)`` in [0, 1]; a digit model's light on dark."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder; give image or .npy files")
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as f:
        data = f.read()
    if path.lower().endswith(".npy"):
        pixels = _array(data, path)
    else:
        pixels = _image(data, path, c, h, w, None if digits else background)
    pixels = _batch(pixels, path, c, h, w)
    if not digits:
        return pixels
    k = max(1, min(h, w) // 14)
    for i, img in enumerate(pixels):
        grey = img.mean(axis=0)
        frame = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])
        background_level = float(np.median(frame))
        if background_level >= 0.5 and float(grey.mean()) < background_level - 1e-3:  # dark on light
            pixels[i] = 1.0 - img
    return pixels


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    session = ort.InferenceSession(argv[0], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    _, c, h, w = json.loads(meta["input_shape"])
    # per-channel (a list) or one value, in [0, 1] pixel units: shaped to broadcast over (N, C, H, W)
    mean = np.asarray(json.loads(meta["mean"]), np.float32).reshape(-1, 1, 1)
    std = np.asarray(json.loads(meta["std"]), np.float32).reshape(-1, 1, 1)
    classes = json.loads(meta["classes"])
    digits = json.loads(meta.get("digits", "true"))  # a file from before the flag holds a digit model
    background = np.broadcast_to(mean.ravel(), (3,)).tolist()  # a photo's transparency: the data's mean colour
    outputs = [o.name for o in session.get_outputs()]
    for path in argv[1:]:
        x = ((load(path, c, h, w, digits, background) - mean) / std).astype(np.float32)
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
