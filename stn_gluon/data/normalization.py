"""How pixels become a model's input, per channel: ``(x - mean[c]) / std[c]`` with ``x`` in [0, 1]; NumPy only.

A model's ``mean`` and ``std`` (``model.json``, the ONNX metadata) are either one number for every channel
(the digit models: MNIST's) or one per channel (models trained on the user's images: computed on the
training split, :func:`channel_stats`). Whatever reads them goes through :func:`as_channel_values`.

A model's ``digits`` flag says whether the digit rules apply to its inputs (polarity inversion, strokes
composited onto a contrasting background): :func:`is_digit_model`. Models from before the flag are digit models.
"""
import json
import math
from typing import Any, Mapping, Sequence, Tuple, Union

import numpy as np

__all__ = ["ChannelValues", "as_channel_values", "channel_stats", "normalize_unit", "is_digit_model"]

#: One number for every channel, or one per channel (or the (C, 1, 1) float32 array :func:`as_channel_values` made).
ChannelValues = Union[float, Sequence[float], np.ndarray]


def as_channel_values(value: Any, channels: int, name: str = "mean") -> np.ndarray:
    """``value`` (a number, or ``channels`` numbers; a JSON string of either) -> ``float32 (channels, 1, 1)``.

    Raises ``ValueError`` naming ``name`` when it is neither, or holds a non-finite number.
    """
    if type(value) in (float, int) and math.isfinite(value):  # the common case, without the checks' cost
        return np.full((channels, 1, 1), value, np.float32)
    if isinstance(value, np.ndarray) and value.shape == (channels, 1, 1) and value.dtype == np.float32:
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} holds a non-finite number")
        return value  # already read: a server normalises every request with the same arrays
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{name} {value!r} is not a number or a list of numbers") from None
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number or a list of numbers") from None
    if arr.size not in (1, channels):
        raise ValueError(f"{name} has {arr.size} values for {channels} channel(s)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} {value!r} holds a non-finite number")
    return np.broadcast_to(arr, (channels,)).astype(np.float32).reshape(channels, 1, 1)


def channel_stats(pixels: np.ndarray, chunk: int = 4096) -> Tuple[list, list]:
    """Per-channel mean and std of ``uint8 (N, C, H, W)`` pixels, in [0, 1] units -> two lists of C floats.

    Summed in float64 a chunk at a time (no float copy of the whole set). A channel with no spread gets std 1.
    """
    n, c = pixels.shape[:2]
    total = np.zeros(c)
    squares = np.zeros(c)
    for start in range(0, n, chunk):
        part = pixels[start:start + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    count = max(n * pixels.shape[2] * pixels.shape[3], 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    std[std < 1e-6] = 1.0
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def normalize_unit(pixels: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """Pixels ``(N, C, H, W)`` in [0, 1] -> ``float32 (x - mean) / std`` per channel (``mean``/``std`` as
    :func:`as_channel_values` reads them)."""
    c = pixels.shape[1]
    out = np.subtract(pixels, as_channel_values(mean, c, "mean"), dtype=np.float32)
    out /= as_channel_values(std, c, "std")
    return out


def is_digit_model(meta: Mapping[str, Any]) -> bool:
    """Whether the digit rules apply to a model's inputs, from its ``model.json`` or ONNX metadata.

    ``digits`` is ``true``/``false`` (a bool, or its JSON text in ONNX metadata); absent: a model from before
    the flag, all of which were digit models.
    """
    value = meta.get("digits", True)
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no")
    return bool(value)
