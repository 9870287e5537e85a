"""Inference on saved models: input decoding, preprocessing, and one predictor API per backend.

Preprocessing is the training one: grey, resized to the model's input size,
pixels scaled to [0, 1] (``invert`` turns dark-on-light drawings into MNIST's
light-on-dark), then ``(x - mean) / std`` with the model's normalisation.

Both backends answer :meth:`Predictor.predict` with NumPy arrays:
``logits`` and ``probabilities`` ``(N, K)``, and for STN models ``theta``
``(N, 6)`` and ``warped`` ``(N, C, H_out, W_out)`` (normalised, like the input).
"""
import io
import os

import numpy as np

from .errors import StnGluonError

__all__ = ["BACKENDS", "decode_image", "load_inputs", "preprocess", "load_predictor", "Predictor",
           "describe", "to_png"]

BACKENDS = ("mxnet", "onnxruntime")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff", ".webp")
MAX_PIXELS = 64 * 1024 * 1024


def decode_image(data, size, name="image", max_pixels=MAX_PIXELS):
    """PNG/JPEG/... bytes -> ``float32 (H, W)`` grey in [0, 1], resized to ``size`` = (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise StnGluonError(f"{name}: {img.width}x{img.height} pixels is more than the "
                                    f"{max_pixels} allowed")
            img.draft("L", (size[1], size[0]))  # JPEG: decode at reduced size when possible
            grey = img.convert("L")
            if grey.size != (size[1], size[0]):
                grey = grey.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(grey, dtype=np.float32) / 255.0
    except StnGluonError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise StnGluonError(f"{name}: not a readable image ({str(err).splitlines()[0][:120]})") from None


def array_to_pixels(arr, input_shape, name="array"):
    """An array of pixels -> ``float32 (N, C, H, W)`` in [0, 1].

    Accepts ``(H, W)``, ``(N, H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` matching
    ``input_shape`` = (C, H, W). uint8 arrays are 0..255; float arrays are taken
    as already in [0, 1]. NaN or infinite values are refused.
    """
    c, h, w = input_shape
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise StnGluonError(f"{name}: expected numbers, got {a.dtype}")
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
    if not np.isfinite(a).all():
        raise StnGluonError(f"{name}: contains NaN or infinite values")
    if a.shape == (h, w):
        a = a[None, None]
    elif a.ndim == 3 and a.shape[1:] == (h, w):
        a = a[:, None] if c == 1 else a[None]  # (N, H, W) for grey models, else (C, H, W)
    elif a.ndim == 4 and a.shape[1:] == (c, h, w):
        pass
    else:
        raise StnGluonError(f"{name}: shape {a.shape} does not fit the model's input "
                            f"(H, W) = ({h}, {w}) with {c} channel(s)")
    if a.shape[1] != c:
        raise StnGluonError(f"{name}: {a.shape[1]} channel(s), the model takes {c}")
    return a


def load_inputs(paths, input_shape):
    """Files (images or ``.npy``) -> ``(pixels float32 (N, C, H, W) in [0, 1], names)``."""
    c, h, w = input_shape
    batches, names = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise StnGluonError(f"{path}: file not found")
        if path.lower().endswith(".npy"):
            try:
                arr = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise StnGluonError(f"{path}: not a readable .npy file ({str(err).splitlines()[0][:120]})") from None
            pixels = array_to_pixels(arr, input_shape, path)
        else:
            with open(path, "rb") as f:
                grey = decode_image(f.read(), (h, w), path)
            if c != 1:
                raise StnGluonError(f"{path}: the model takes {c} channels; give a .npy array")
            pixels = grey[None, None]
        batches.append(pixels)
        names += [path] if len(pixels) == 1 else [f"{path}[{i}]" for i in range(len(pixels))]
    return np.concatenate(batches), names


def preprocess(pixels, mean, std, invert=False):
    """Pixels in [0, 1] ``(N, C, H, W)`` -> the model's normalised input."""
    x = 1.0 - pixels if invert else pixels
    return ((x - mean) / std).astype(np.float32)


class Predictor:
    """Common face of the backends: ``input_shape``, ``mean``, ``std``, ``classes``, ``predict(x)``."""

    backend = None

    def predict(self, x):
        raise NotImplementedError

    def check(self, x):
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise StnGluonError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")


class MXNetPredictor(Predictor):
    """An exported MXNet model (Gluon export or Module checkpoint) through ``SymbolBlock``."""

    backend = "mxnet"

    def __init__(self, path):
        import mxnet as mx

        from .export import load_model

        self.mx = mx
        self.model = load_model(path)
        meta = self.model.meta
        self.input_shape = tuple(meta["input_shape"])
        self.mean, self.std = float(meta["mean"]), float(meta["std"])
        self.classes = list(meta.get("classes", []))
        self.model.net.hybridize(static_alloc=True)
        if self.model.stn is not None:
            self.model.stn.hybridize(static_alloc=True)
        self.source = self.model.files

    def predict(self, x):
        self.check(x)
        data = self.mx.nd.array(x)
        logits = self.model.net(data)
        out = dict(logits=logits.asnumpy(), probabilities=self.mx.nd.softmax(logits).asnumpy())
        if self.model.stn is not None:
            stn_out = self.model.stn(data)
            out["warped"] = stn_out[0].asnumpy()
            if len(stn_out) > 1:
                out["theta"] = stn_out[1].asnumpy()
        return out


class OnnxPredictor(Predictor):
    """An exported ``.onnx`` model through ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(self, path, threads=None):
        from .onnx import OnnxModel

        self.model = OnnxModel(path, threads=threads)
        self.input_shape = self.model.input_shape
        self.mean, self.std = self.model.mean, self.model.std
        self.classes = self.model.classes
        self.source = [path]

    def predict(self, x):
        self.check(x)
        return self.model.run(x)


def _find_onnx(path):
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".onnx"))
        if not found:
            raise StnGluonError(f"{path}: no .onnx file in this folder (run stn-gluon export-onnx)")
        return os.path.join(path, "model.onnx" if "model.onnx" in found else found[0])
    return path


def load_predictor(path, backend=None, threads=None):
    """A :class:`Predictor` for ``path``: a ``.onnx`` file, a save dir or an export prefix.

    backend: ``"mxnet"`` or ``"onnxruntime"``; ``None`` picks ONNX Runtime for a
    ``.onnx`` path and MXNet otherwise.
    """
    if backend is None:
        backend = "onnxruntime" if str(path).endswith(".onnx") else "mxnet"
    if backend not in BACKENDS:
        raise StnGluonError(f"unknown backend {backend!r}; choose {' or '.join(BACKENDS)}")
    if backend == "onnxruntime":
        from .export import check_onnx_current

        onnx_path = _find_onnx(path)
        check_onnx_current(onnx_path, path)  # an export left over from before a retraining is refused
        return OnnxPredictor(onnx_path, threads=threads)
    if str(path).endswith(".onnx"):
        raise StnGluonError(f"{path}: the mxnet backend needs the MXNet export (-symbol.json/.params), "
                            f"not the .onnx file")
    return MXNetPredictor(path)


def describe(outputs, classes, names):
    """Predictor outputs -> one JSON-able dict per input."""
    results = []
    probs = outputs["probabilities"]
    for i, name in enumerate(names):
        label = int(np.argmax(probs[i]))
        entry = dict(input=name, label=label, probabilities=[round(float(p), 6) for p in probs[i]])
        if classes:
            entry["class"] = classes[label] if label < len(classes) else str(label)
        entry["theta"] = [round(float(t), 6) for t in outputs["theta"][i]] if "theta" in outputs else None
        results.append(entry)
    return results


def to_png(image, mean, std):
    """A normalised ``(C, H, W)`` image -> PNG bytes (grey or RGB)."""
    from PIL import Image

    pixels = np.clip(np.asarray(image) * std + mean, 0, 1)
    pixels = (pixels * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
