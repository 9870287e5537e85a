"""Running an exported STN classifier with ONNX Runtime: :class:`OnnxModel`. Imports no MXNet.

Also importable as ``stn_gluon.export.onnx.OnnxModel``, beside the export functions (which need MXNet).
"""
import concurrent.futures
import hashlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .._runtime.errors import CheckpointError, StnGluonError
from ..data.normalization import as_channel_values, is_digit_model
from .int8 import target_warning
from .onnx_io import cpu_session, decode_metadata

__all__ = ["OnnxModel", "channel_values"]

_WARNED: set = set()


def _warn_target(meta: Dict[str, Any], path: str) -> Optional[str]:
    """Say on stderr, in one line and once per file and process, that an int8 model made for VNNI CPUs
    (``int8_target`` ``vnni`` in its metadata) runs on a CPU without VNNI; returns that line, or ``None``."""

    line = target_warning(meta, path)
    if line and os.path.abspath(path) not in _WARNED:
        _WARNED.add(os.path.abspath(path))
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return line


def channel_values(value: Any, channels: int, name: str) -> Union[float, List[float]]:
    """A model's ``mean`` or ``std`` as its metadata gives it (a number, a list of ``channels`` numbers, or
    the JSON text of either) -> a float, or a list of ``channels`` floats; ``ValueError`` naming ``name``
    otherwise (:func:`stn_gluon.data.normalization.as_channel_values`)."""
    as_channel_values(value, channels, name)  # refuses what is neither
    if isinstance(value, str):
        value = json.loads(value)
    values = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    return values if isinstance(value, (list, tuple)) else values[0]


class OnnxModel:
    """An exported ``.onnx`` STN classifier run by ONNX Runtime.

    ``run(x)``: ``x`` float32 ``(N, C, H, W)``, normalised as the metadata says;
    returns a dict of the model's outputs (``logits``, ``probabilities``, and
    ``theta``, ``warped`` for STN models) as NumPy arrays.

    From the metadata: ``input_shape`` (C, H, W), ``mean`` and ``std`` (a float, or one per channel),
    ``classes`` (names, index = label), ``digits`` (whether the digit rules apply to its inputs; absent:
    True, see :func:`stn_gluon.data.normalization.is_digit_model`).

    threads: CPU threads to use (default: all). mode: ``"split"`` runs a
    single-threaded session and splits a large batch into one chunk per
    thread, run concurrently (this model's small convolutions parallelise
    poorly inside ONNX Runtime); ``"intra"`` gives ONNX Runtime's own
    intra-op thread pool the threads instead. Either way no ONNX Runtime
    thread spins while it waits (``session.intra_op.allow_spinning`` and
    ``session.inter_op.allow_spinning`` are ``"0"``): a spinning pool lost
    two thirds of its speed beside one busy process (issue 19), while split
    mode's threads wait in the kernel and keep their fair share.

    An int8 file made for CPUs with VNNI (``export-onnx --int8-target vnni``)
    loaded on a CPU without VNNI prints a one-line warning on stderr (once per
    file), also kept in ``warning`` (``None`` otherwise).

    The file is read once: ``sha256`` is the SHA-256 of the bytes the session was made from. An ONNX file is
    code-equivalent: load only files from sources you trust.
    """

    MIN_CHUNK = 16

    def __init__(self, path: str, threads: Optional[int] = None, mode: str = "split",
                 outputs: Optional[Sequence[str]] = None):
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: file not found")
        if mode not in ("split", "intra"):
            raise StnGluonError(f"OnnxModel mode must be 'split' or 'intra', got {mode!r}")
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        self.mode = mode
        self._pool: "Optional[concurrent.futures.ThreadPoolExecutor]" = None
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise CheckpointError(f"{path}: unreadable ({err.strerror or err})") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            self.session = cpu_session(data, 1 if mode == "split" else self.threads)
        except Exception as err:  # ORT raises its own exception types for unreadable files
            first = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first})") from None
        try:
            self.meta = decode_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        except ValueError as err:
            raise CheckpointError(f"{path}: its metadata is not what stn-gluon export-onnx writes ({err})") from None
        self.warning = _warn_target(self.meta, path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise CheckpointError(f"{path}: expected one (N, C, H, W) input, the model has "
                                  f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        dims = inputs[0].shape[1:]
        if "input_shape" in self.meta:
            dims = self.meta["input_shape"][1:]
        if not all(isinstance(d, int) for d in dims):
            raise CheckpointError(f"{path}: the input's C, H, W are not fixed ({inputs[0].shape})")
        self.input_shape = tuple(dims)
        available = [o.name for o in self.session.get_outputs()]
        self.outputs = [o for o in (outputs or available) if o in available]
        if mode == "split" and self.threads > 1:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="ort")
        try:
            self.mean = channel_values(self.meta.get("mean", 0.0), self.input_shape[0], "mean")
            self.std = channel_values(self.meta.get("std", 1.0), self.input_shape[0], "std")
            self.classes = [str(c) for c in self.meta.get("classes", [])]
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: its metadata's mean, std or classes are malformed ({err})") from None
        self.digits = is_digit_model(self.meta)

    def describe_threads(self) -> str:
        """One line: the threads this model runs on."""
        if self.mode == "split":
            return (f"CPU threads: ONNX Runtime, {self.threads} single-threaded runs of one batch's chunks at once "
                    "(split mode), no spinning")
        return f"CPU threads: ONNX Runtime intra-op pool of {self.threads}, no spinning"

    def _run(self, x: np.ndarray) -> List[np.ndarray]:
        return self.session.run(self.outputs, {self.input_name: x})

    def run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise StnGluonError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        chunks = min(self.threads, len(x) // self.MIN_CHUNK) if self._pool is not None else 1
        if chunks <= 1:
            return dict(zip(self.outputs, self._run(x)))
        assert self._pool is not None  # chunks > 1 only with a pool
        parts = list(self._pool.map(self._run, np.array_split(x, chunks)))
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.outputs)}


