"""Inference on saved models: preprocessing, and one predictor API per backend.

Inputs are read by :mod:`stn_gluon.serve.inputs` (pixels in [0, 1], in the model's channels; the digit
rules for digit models: :meth:`Predictor.input_spec`). Preprocessing is the training one:
``(x - mean) / std`` with the model's normalisation, one number or one per channel.

Both backends answer :meth:`Predictor.predict` with NumPy arrays:
``logits`` and ``probabilities`` ``(N, K)``, and for STN models ``theta``
``(N, 6)`` and ``warped`` ``(N, C, H_out, W_out)`` (normalised, like the input).
:meth:`Predictor.info` says what the model is (backend, input shape, classes,
source files and their SHA-256).
"""
import io
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .._runtime.errors import StnGluonError
from .._runtime.threads import check_threads, describe_threads
from .._runtime.errors import CheckpointError
from ..data.normalization import ChannelValues, as_channel_values, is_digit_model, normalize_unit
from ..export.int8 import file_int8_target
from ..export.onnx_model import OnnxModel, channel_values
from .inputs import InputSpec
from ..nn.pretrained import PREFIX, is_pretrained_ref, resolve_model_ref

__all__ = ["BACKENDS", "preprocess", "load_predictor", "Predictor", "MXNetPredictor", "OnnxPredictor",
           "describe", "to_png"]

BACKENDS = ("mxnet", "onnxruntime")


def preprocess(pixels: np.ndarray, mean: ChannelValues, std: ChannelValues, invert: bool = False) -> np.ndarray:
    """Pixels ``(N, C, H, W)`` in [0, 1] -> the model's normalised input, float32, same shape.

    mean, std: one number or one per channel. invert: use ``1 - pixels`` (see
    :func:`stn_gluon.serve.inputs.apply_polarity` for per-image choice).
    """
    return normalize_unit(1.0 - pixels if invert else pixels, mean, std)


class Predictor:
    """Common face of the backends: ``backend``, ``input_shape`` (C, H, W), ``mean``, ``std`` (a float, or
    one per channel), ``classes`` (names, index = label), ``digits`` (the digit rules apply to its inputs),
    ``transform`` (the STN's, ``None`` without one), ``source`` (the files loaded), ``sha256``
    (base name -> SHA-256 of the bytes loaded: each file is read once, and what was hashed is what runs),
    ``predict(x)``, ``input_spec()`` and ``info()``."""

    backend: Optional[str] = None
    transform: Optional[str] = None
    digits: bool = True
    input_shape: tuple
    mean: Union[float, List[float]]
    std: Union[float, List[float]]
    classes: List[str]
    source: List[str]
    sha256: Dict[str, str]

    def predict(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Normalised ``x`` float32 ``(N, C, H, W)`` -> outputs (see the module docstring)."""
        raise NotImplementedError

    def check(self, x: np.ndarray) -> None:
        """Refuse an input that is not ``(N,) + input_shape``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise StnGluonError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")

    def details(self) -> Dict[str, Any]:
        """Backend-specific facts for :meth:`info`."""
        return {}

    def input_spec(self) -> InputSpec:
        """How this model's images are read (:class:`~stn_gluon.serve.inputs.InputSpec`): its input shape,
        whether the digit rules apply, and the colour transparency is composited onto otherwise (its mean)."""
        c, h, w = (int(v) for v in self.input_shape)
        mean = tuple(float(v) for v in as_channel_values(self.mean, c, "mean").ravel())
        return InputSpec((c, h, w), bool(self.digits), mean)

    def describe_threads(self) -> str:
        """One line: the CPU threads this backend uses and why (see :mod:`stn_gluon._runtime.threads`)."""
        return describe_threads()

    def info(self) -> Dict[str, Any]:
        """What the model is: ``backend``, ``input_shape`` ``[None, C, H, W]``, ``mean``, ``std``,
        ``classes``, ``digits``, ``transform``, ``files`` (base name -> SHA-256 hex of each source file), plus
        ``opset`` (ONNX) or ``symbol`` and ``epoch`` (MXNet)."""
        info = dict(backend=self.backend, input_shape=[None] + list(self.input_shape), mean=self.mean,
                    std=self.std, classes=self.classes, digits=self.digits, transform=self.transform,
                    files=dict(self.sha256))
        info.update(self.details())
        return info


class MXNetPredictor(Predictor):
    """An exported MXNet model (Gluon export or Module checkpoint) through ``SymbolBlock``.

    most_threads: the most OpenMP threads it is meant to run with (``stn-gluon serve``: 1). MXNet's count is
    fixed when it loads (``OMP_NUM_THREADS``, which ``stn-gluon serve`` sets to 1); where it is higher, or not a
    sensible count, one warning says so (:func:`stn_gluon._runtime.threads.check_threads`).
    """

    backend = "mxnet"

    def __init__(self, path: str, most_threads: Optional[int] = None):
        import mxnet as mx

        from ..export.saved import load_model  # lazy: imports MXNet, which the ONNX Runtime backend does without

        check_threads(most=most_threads)
        self.mx = mx
        self.model = load_model(path)
        meta = self.model.meta
        self.input_shape = tuple(meta["input_shape"])
        try:
            self.mean = channel_values(meta["mean"], self.input_shape[0], "mean")
            self.std = channel_values(meta["std"], self.input_shape[0], "std")
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{self.model.prefix}.json: its mean or std is malformed ({err})") from None
        self.classes = [str(c) for c in meta.get("classes", [])]
        self.digits = is_digit_model(meta)
        self.transform = meta.get("transform") if self.model.stn is not None else None
        self.model.net.hybridize(static_alloc=True)
        if self.model.stn is not None:
            self.model.stn.hybridize(static_alloc=True)
        self.source = self.model.files
        self.sha256 = dict(self.model.sha256)

    def predict(self, x: np.ndarray) -> Dict[str, np.ndarray]:
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

    def details(self) -> Dict[str, Any]:
        return dict(symbol=os.path.basename(self.source[0]), epoch=self.model.epoch)


class OnnxPredictor(Predictor):
    """An exported ``.onnx`` model through ONNX Runtime (an int8 file made for VNNI CPUs warns on a CPU
    without: :class:`~stn_gluon.onnx.OnnxModel`)."""

    backend = "onnxruntime"

    def __init__(self, path: str, threads: Optional[int] = None):

        self.model = OnnxModel(path, threads=threads)
        self.input_shape = self.model.input_shape
        self.mean, self.std = self.model.mean, self.model.std
        self.classes = self.model.classes
        self.digits = self.model.digits
        transform = str(self.model.meta.get("transform") or "none")
        self.transform = None if transform == "none" else transform
        self.source = [path]
        self.sha256 = {os.path.basename(path): self.model.sha256}

    def predict(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        self.check(x)
        return self.model.run(x)

    def details(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(opset=int(self.model.meta.get("opset", 0)) or None)
        if "quantization" in self.model.meta:  # an int8 file: how it was made, the CPUs it is right on
            out.update(quantization=self.model.meta["quantization"], int8_target=file_int8_target(self.model.meta))
        if self.model.warning:
            out["warning"] = self.model.warning
        return out

    def describe_threads(self) -> str:
        return self.model.describe_threads()


def _find_onnx(path: str) -> str:
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".onnx"))
        if not found:
            raise StnGluonError(f"{path}: no .onnx file in this folder (run stn-gluon export-onnx)")
        return os.path.join(path, "model.onnx" if "model.onnx" in found else found[0])
    return path


def load_predictor(path: str, backend: Optional[str] = None, threads: Optional[int] = None,
                   mxnet_threads: Optional[int] = None) -> Predictor:
    """A :class:`Predictor` for ``path``: a ``.onnx`` file, a save dir, an export prefix or
    ``pretrained:NAME`` (a model shipped with the package, see :mod:`stn_gluon.nn.pretrained`).

    backend: ``"mxnet"`` or ``"onnxruntime"``; ``None`` picks ONNX Runtime for a
    ``.onnx`` path and MXNet otherwise. threads: ONNX Runtime's CPU threads; mxnet_threads: the most OpenMP
    threads for the MXNet backend (see :class:`MXNetPredictor`).
    """

    ref, path = str(path), resolve_model_ref(str(path))
    if backend is None:
        backend = "onnxruntime" if path.endswith(".onnx") else "mxnet"
    if backend not in BACKENDS:
        raise StnGluonError(f"unknown backend {backend!r}; choose {' or '.join(BACKENDS)}")
    if backend == "onnxruntime" and is_pretrained_ref(ref):
        name = ref[len(PREFIX):]
        raise StnGluonError(f"{ref} ships as MXNet files: use backend mxnet, or make {name}.onnx with "
                            f"stn-gluon export-onnx --model {ref} and give that", params=("backend",))
    if backend == "onnxruntime":
        from ..export.saved import check_onnx_current  # lazy: imports MXNet (see load_model above)

        onnx_path = _find_onnx(path)
        predictor = OnnxPredictor(onnx_path, threads=threads)  # the file read once: its metadata checked below
        check_onnx_current(onnx_path, path, predictor.model.meta)  # an export from before a retraining is refused
        return predictor
    if path.endswith(".onnx"):
        raise StnGluonError(f"{path}: the mxnet backend needs the MXNet export (-symbol.json/.params), "
                            f"not the .onnx file")
    return MXNetPredictor(path, mxnet_threads)


def describe(outputs: Dict[str, np.ndarray], classes: Sequence[str], names: Sequence[str],
             inverted: Optional[Union[Sequence[bool], np.ndarray]] = None,
             rules: Optional[Sequence[Sequence[str]]] = None) -> List[Dict[str, Any]]:
    """Predictor outputs -> one JSON-able dict per input: ``input``, ``label`` (the class index),
    ``probabilities`` (K floats in [0, 1]), ``class`` (its name; the index as text where the model names
    none), ``theta`` (or None), and ``inverted`` (bool) and ``rules`` (the words of
    :data:`stn_gluon.serve.inputs.RULES` applied, in order) when given."""
    results = []
    probs = outputs["probabilities"]
    for i, name in enumerate(names):
        label = int(np.argmax(probs[i]))
        entry = dict(input=name, label=label, probabilities=[round(float(p), 6) for p in probs[i]])
        entry["class"] = str(classes[label]) if label < len(classes) else str(label)
        entry["theta"] = [round(float(t), 6) for t in outputs["theta"][i]] if "theta" in outputs else None
        if inverted is not None:
            entry["inverted"] = bool(inverted[i])
        if rules is not None:
            entry["rules"] = list(rules[i])
        results.append(entry)
    return results


def to_png(image: np.ndarray, mean: ChannelValues, std: ChannelValues) -> bytes:
    """A normalised ``(C, H, W)`` image -> PNG bytes (grey for C = 1, else RGB); mean, std as :func:`preprocess`'s."""
    from PIL import Image

    image = np.asarray(image)
    c = image.shape[0]
    pixels = np.clip(image * as_channel_values(std, c, "std") + as_channel_values(mean, c, "mean"), 0, 1)
    pixels = (pixels * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
