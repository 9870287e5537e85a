"""Request parsing for the HTTP server, as plain functions (no web framework).

Each function turns part of a ``POST /v1/predict`` request (query, content
type, body bytes) into validated values, or raises :class:`HTTPError` with the
status and a one-line reason. Pixels come out as ``float32 (N, C, H, W)`` in
[0, 1] in the model's channels and size, exactly as the CLI reads them
(:mod:`stn_gluon.serve.inputs`: an :class:`~stn_gluon.serve.inputs.InputSpec` says how).
"""
import io
import json
import struct
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .._runtime.errors import StnGluonError
from .inputs import (FALSE_WORDS, TRUE_WORDS, Decoded, InputBatch, InputSpec, decode_pixels, parse_invert,
                     validate_array)

__all__ = ["HTTPError", "PredictOptions", "parse_options", "parse_flag", "content_kind", "check_length",
           "check_total", "check_file_count", "multipart_error", "parse_json_instances", "decode_upload",
           "decode_uploads", "image_pixels", "JSON_PIXEL_RANGES"]

JSON_PIXEL_RANGES = ("0-1", "0-255")
_TRUE, _FALSE = TRUE_WORDS, FALSE_WORDS + ("",)  # an empty flag (``?return_image=``) is off


class HTTPError(Exception):
    """An answer other than 200, with a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PredictOptions:
    """The query of ``POST /v1/predict``: ``return_image`` (add the rectified image), ``invert``
    (``"auto"``, True or False), ``return_grid`` (add the STN's sampling region in input pixels) and
    ``return_input`` (add the input as the model saw it)."""

    return_image: bool = False
    invert: Union[str, bool] = "auto"
    return_grid: bool = False
    return_input: bool = False


def parse_flag(query: Mapping[str, str], name: str, default: str = "0") -> bool:
    """A 1/0 (true/false, yes/no) query parameter -> bool; anything else is a 400."""
    value = str(query.get(name, default)).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise HTTPError(400, f"query parameter {name}={value!r}: expected 1 or 0")


def parse_options(query: Mapping[str, str]) -> PredictOptions:
    """The query parameters -> :class:`PredictOptions` (``invert`` defaults to ``auto``)."""
    try:
        invert = parse_invert(query.get("invert", "auto"))
    except StnGluonError:
        raise HTTPError(400, f"query parameter invert={query.get('invert')!r}: expected auto, 1 or 0 "
                             f"(or true/false)") from None
    return PredictOptions(return_image=parse_flag(query, "return_image"), invert=invert,
                          return_grid=parse_flag(query, "return_grid"), return_input=parse_flag(query, "return_input"))


def content_kind(content_type: Optional[str], channels: int) -> str:
    """A ``Content-Type`` header -> ``"image"``, ``"json"`` or ``"multipart"``; 415 otherwise.

    Image bodies need a grey or colour model (``channels`` 1 or 3); others must send JSON.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        if channels not in (1, 3):
            raise HTTPError(415, f"the model takes {channels} channels; send JSON instances")
        return "image"
    if ctype == "application/json":
        return "json"
    if ctype == "multipart/form-data":
        return "multipart"
    raise HTTPError(415, f"unsupported content type {ctype or '(none)'}: send image/*, "
                         f"multipart/form-data or application/json")


def check_length(declared: Optional[str], max_bytes: int) -> None:
    """Refuse a ``Content-Length`` header over ``max_bytes`` (413) or not a number (400)."""
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise HTTPError(400, "bad Content-Length header") from None
    if size > max_bytes:
        raise HTTPError(413, f"body of {declared} bytes is larger than the {max_bytes} bytes allowed")


def decode_upload(data: bytes, name: str, spec: Union[InputSpec, Sequence[int]], max_pixels: int,
                  check_size: Optional[Callable[[int, int], None]] = None) -> Decoded:
    """Image bytes -> :class:`~stn_gluon.serve.inputs.Decoded` (pixels ``float32 (C, H, W)`` in [0, 1] as
    ``spec`` says, an :class:`~stn_gluon.serve.inputs.InputSpec` or a digit model's (C, H, W)); 413 when too
    large, 400 when unreadable. check_size: see :func:`stn_gluon.serve.inputs.decode_pixels`."""
    try:
        return decode_pixels(data, spec, name, max_pixels=max_pixels, check_size=check_size)
    except StnGluonError as err:
        raise HTTPError(413 if "allowed" in str(err) else 400, str(err)) from None


def image_pixels(data: bytes) -> Optional[int]:
    """An image's width x height from its header alone (nothing decoded), or None when it is not readable.
    PNG's header is read here (a microsecond); other formats through Pillow."""
    from PIL import Image

    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width) * int(height)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width * img.height)
    except Exception:  # unreadable: decoding says why
        return None


def decode_uploads(images: Sequence[Tuple[bytes, str]], spec: Union[InputSpec, Sequence[int]], max_pixels: int,
                   max_request_pixels: int) -> InputBatch:
    """``(bytes, name)`` images of one request -> :class:`~stn_gluon.serve.inputs.InputBatch` (pixels
    ``float32 (N, C, H, W)``, each image's rules and size): each at most ``max_pixels``, all together at most
    ``max_request_pixels`` (413, checked from each header before it is decoded)."""
    seen = [0]

    def count(width: int, height: int) -> None:
        seen[0] += width * height
        if seen[0] > max_request_pixels:
            raise HTTPError(413, f"the images of this request hold more than the {max_request_pixels} "
                                 f"pixels allowed per request")

    out = [decode_upload(data, name, spec, max_pixels, count) for data, name in images]
    return InputBatch(np.stack([d.pixels for d in out]), [name for _, name in images], [d.rules for d in out],
                      [d.size for d in out])


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"body is not valid JSON ({str(err)[:80]})") from None
    except RecursionError:
        raise HTTPError(400, "body is JSON nested too deeply") from None


def parse_json_instances(body: bytes, input_shape: Sequence[int], max_instances: int) -> np.ndarray:
    """A JSON body ``{"instances": [...], "pixel_range": "0-1"|"0-255"}`` -> ``float32 (N, C, H, W)`` in [0, 1].

    Each instance is ``(H, W)`` (or ``(C, H, W)``); the values are checked by
    :func:`stn_gluon.serve.inputs.validate_array`, the validator of the CLI's ``.npy``
    files. 400: not JSON, no ``instances`` list, bad ``pixel_range``; 413: more
    than ``max_instances``; 422: not numbers, NaN/inf, out of range, bad shape.
    """
    c, h, w = input_shape
    doc = _load_json(body)
    if not isinstance(doc, dict) or "instances" not in doc:
        raise HTTPError(400, 'JSON body must be an object with "instances": [...]')
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise HTTPError(400, '"instances" must be a non-empty list')
    if len(instances) > max_instances:
        raise HTTPError(413, f"{len(instances)} instances; at most {max_instances} per request")
    pixel_range = doc.get("pixel_range", "0-1")
    if pixel_range not in JSON_PIXEL_RANGES:
        raise HTTPError(400, '"pixel_range" must be "0-1" or "0-255"')
    try:
        arr = np.array(instances, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise HTTPError(422, "instances must be equally shaped arrays of numbers") from None
    if arr.ndim < 3:
        raise HTTPError(422, f"instances have shape {arr.shape[1:]}; each must be ({h}, {w})"
                             f"{'' if c == 1 else f' or ({c}, {h}, {w})'}")
    try:
        return validate_array(arr, input_shape, pixel_range, "instances")
    except StnGluonError as err:
        raise HTTPError(422, str(err)) from None


def multipart_error(err: Exception) -> HTTPError:
    """A multipart parser's exception -> 413 (too many parts, too large) or 400 (malformed)."""
    detail = str(getattr(err, "detail", None) or err or type(err).__name__)
    if detail.startswith("Too many") or "exceeded maximum size" in detail.lower():
        return HTTPError(413, f"multipart body: {detail[:100]}")
    return HTTPError(400, f"malformed multipart body ({detail[:100]})")


def check_file_count(count: int, max_files: int) -> None:
    """Refuse a multipart body with no file (400) or more than ``max_files`` (413)."""
    if count == 0:
        raise HTTPError(400, "multipart body has no file")
    if count > max_files:
        raise HTTPError(413, f"{count} files; at most {max_files} per request")


def check_total(size: int, max_bytes: int, what: str = "upload") -> None:
    """Refuse ``size`` bytes received so far when over ``max_bytes`` (413)."""
    if size > max_bytes:
        raise HTTPError(413, f"{what} larger than the {max_bytes} bytes allowed")
