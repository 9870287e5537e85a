"""Reading inputs the way a person meant them: images, arrays, the digit rules.

Every input ends as pixels ``float32 (N, C, H, W)`` in [0, 1], in the model's own channels and size
(:class:`InputSpec`: RGB for a 3-channel model, grey for a 1-channel one):

* images (PNG, JPEG, BMP, GIF, TIFF, WebP, ...): the EXIF orientation applied, an alpha channel
  composited (below), converted to the model's channels (grey to RGB repeats the grey; RGB to grey is
  ITU-R 601 luma, Pillow's ``L``), resized to the model's input size (bilinear);
* arrays (``.npy`` files, the server's JSON instances): checked by one
  validator, :func:`validate_array` (dtype, NaN/inf, value range, shape).

The digit rules apply only to digit models (``digits`` in ``model.json`` / the ONNX metadata, absent: a
digit model, :func:`stn_gluon.data.normalization.is_digit_model`):

* transparency is composited onto a background that contrasts with the visible strokes (white behind dark
  strokes, black behind light ones): rule ``contrast_background``;
* polarity: :func:`apply_rules` (:func:`apply_polarity`) inverts dark-on-light inputs, detected by
  :func:`looks_dark_on_light`, unless the caller forces either way: rule ``inverted``.

For other models (photographs) nothing is inverted, and transparency is composited onto the model's mean
colour (what its normalisation reads as 0, and what the STN shows outside the image): rule
``mean_background``. Each input's rules, in the order applied, are listed in :data:`RULES`' words.

Imports only NumPy (and Pillow when decoding images): no MXNet.
"""
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._runtime.errors import StnGluonError

__all__ = ["PIXEL_RANGES", "MAX_PIXELS", "RULES", "InputSpec", "Decoded", "InputBatch", "decode_pixels",
           "decode_image", "as_spec", "validate_array", "read_inputs", "load_inputs", "looks_dark_on_light", "apply_polarity",
           "apply_rules", "parse_invert"]

PIXEL_RANGES = ("auto", "0-1", "0-255")  # auto: uint8 is 0..255, any other dtype 0..1
MAX_PIXELS = 64 * 1024 * 1024
IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, TIFF, WebP"
#: An image with transparency is shrunk to at most this side (or 8x the model's input) before its alpha is
#: composited: the compositing's float temporaries stay small whatever the image's size.
COMPOSITE_SIDE = 512
#: The words of a prediction's ``rules``: what was done to an input beyond decoding, converting its channels
#: and resizing it. The first two are the digit rules (digit models only), the last the photo models' rule.
RULE_INVERTED, RULE_CONTRAST, RULE_MEAN = "inverted", "contrast_background", "mean_background"
RULES = (RULE_CONTRAST, RULE_INVERTED, RULE_MEAN)
#: Pillow's mode for each channel count images can be decoded to.
_MODES = {1: "L", 3: "RGB"}

Invert = Union[str, bool]


@dataclass(frozen=True)
class InputSpec:
    """How a model's images are read: ``input_shape`` (C, H, W); ``digits``: the digit rules apply
    (see the module docstring); ``background``: the colour, one value or one per channel in [0, 1], that
    transparency is composited onto for models that are not digit models (the model's mean)."""

    input_shape: Tuple[int, int, int]
    digits: bool = True
    background: Tuple[float, ...] = (0.5,)

    @property
    def channels(self) -> int:
        return int(self.input_shape[0])


def as_spec(spec: Union[InputSpec, Sequence[int]]) -> InputSpec:
    """An :class:`InputSpec`, or a (C, H, W) shape read as a digit model's."""
    if isinstance(spec, InputSpec):
        return spec
    c, h, w = (int(v) for v in spec)
    return InputSpec((c, h, w))


@dataclass
class Decoded:
    """One decoded image: ``pixels`` ``float32 (C, H, W)`` in [0, 1], the ``rules`` applied while decoding, and
    ``size``, the image's own (width, height), upright (EXIF orientation applied)."""

    pixels: np.ndarray
    rules: List[str]
    size: Tuple[int, int]


@dataclass
class InputBatch:
    """Inputs read together: ``pixels`` ``float32 (N, C, H, W)`` in [0, 1], their ``names``, each one's
    ``rules`` (lists, in the order applied) and ``sizes`` ((width, height) of an image, None for an array)."""

    pixels: np.ndarray
    names: List[str]
    rules: List[List[str]] = field(default_factory=list)
    sizes: List[Optional[Tuple[int, int]]] = field(default_factory=list)

    @classmethod
    def of_arrays(cls, pixels: np.ndarray, names: Sequence[str]) -> "InputBatch":
        """Arrays (no rule applied while reading them, no image size)."""
        return cls(pixels, list(names), [[] for _ in names], [None] * len(names))

    @classmethod
    def join(cls, parts: Sequence["InputBatch"]) -> "InputBatch":
        """Several batches as one, in order."""
        return cls(np.concatenate([p.pixels for p in parts]), [n for p in parts for n in p.names],
                   [r for p in parts for r in p.rules], [s for p in parts for s in p.sizes])


def _flatten_alpha(img: Any, side: int = COMPOSITE_SIDE,
                   background: Optional[Sequence[float]] = None) -> Tuple[Any, Optional[str]]:
    """A PIL image with transparency -> (RGB image, the rule applied or None when it is opaque after all),
    shrunk first (by an integer factor, alpha-weighted) to at most ``side`` pixels a side. background:
    the colour to composite onto (one value or three, in [0, 1]); None: one contrasting with the strokes."""
    from PIL import Image

    rgba = img.convert("RGBA")
    factor = -(-max(rgba.size) // side)
    if factor > 1:
        rgba = rgba.reduce(factor)
    pixels = np.asarray(rgba, dtype=np.float32) / 255.0
    alpha = pixels[..., 3:]
    if alpha.min() >= 1.0:
        return rgba.convert("RGB"), None
    if background is None:
        grey = pixels[..., :3].mean(axis=2, keepdims=True)
        ink = float((grey * alpha).sum() / max(float(alpha.sum()), 1e-6))  # mean brightness of what is drawn
        colour, rule = np.full(3, 1.0 if ink < 0.5 else 0.0, np.float32), RULE_CONTRAST
    else:
        colour = np.broadcast_to(np.asarray(background, np.float32).reshape(-1), (3,)).astype(np.float32)
        rule = RULE_MEAN
    flat = pixels[..., :3] * alpha + colour * (1.0 - alpha)
    return Image.fromarray((np.clip(flat, 0, 1) * 255.0 + 0.5).astype(np.uint8), "RGB"), rule


def _has_alpha(img: Any) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


#: EXIF orientation -> the ``Image.transpose`` method that makes the image upright (what
#: ``ImageOps.exif_transpose`` does, read from the one ``getexif`` call a decode makes: it costs a PNG a parse).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}


def _orientation(img: Any) -> int:
    """``img``'s EXIF orientation, 1 (upright) when it has none or a value outside 1-8."""
    value = img.getexif().get(0x0112, 1)
    return value if value in _UPRIGHT else 1


def _upright(img: Any, orientation: int) -> Any:
    """``img`` turned as its EXIF ``orientation`` says (5-8 turn it a quarter)."""
    if orientation == 1:
        return img
    from PIL import Image

    return img.transpose(getattr(Image.Transpose, _UPRIGHT[orientation]))


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if text.startswith("cannot identify image file"):
        return f"unknown or damaged format; expected {IMAGE_FORMATS}, ..."
    return re.sub(r"<[^>]* at 0x[0-9a-fA-F]+>", "the data", text)[:120]


def _channels_mode(c: int, name: str) -> str:
    if c not in _MODES:
        raise StnGluonError(f"{name}: the model takes {c} channels; images feed 1- or 3-channel models, "
                            f"give a .npy array")
    return _MODES[c]


def decode_pixels(data: bytes, spec: Union[InputSpec, Sequence[int]], name: str = "image",
                  max_pixels: int = MAX_PIXELS, check_size: Optional[Callable[[int, int], None]] = None) -> Decoded:
    """Image bytes -> :class:`Decoded`: pixels ``float32 (C, H, W)`` in [0, 1], in the channels and size of
    ``spec`` (an :class:`InputSpec`, or a (C, H, W) shape: a digit model's).

    The EXIF orientation (photos) is applied and transparency composited first (see the module docstring).
    Raises :class:`StnGluonError` naming ``name`` when the bytes are not a readable image, it has more than
    ``max_pixels``, or the model takes neither 1 nor 3 channels. check_size(width, height), when given, is
    called once the header is read, before any pixel is decoded (it may raise).
    """
    from PIL import Image, UnidentifiedImageError

    spec = as_spec(spec)
    c, h, w = spec.input_shape
    mode = _channels_mode(c, name)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise StnGluonError(f"{name}: {img.width}x{img.height} pixels is more than the "
                                    f"{max_pixels} allowed")
            if check_size is not None:
                check_size(img.width, img.height)
            orientation = _orientation(img)
            size = (img.height, img.width) if orientation >= 5 else (img.width, img.height)
            if not _has_alpha(img):
                img.draft(mode, (max(h, w), max(h, w)))  # JPEG: decode at reduced size when possible
            upright, rules = _upright(img, orientation), []
            if _has_alpha(upright):
                upright, rule = _flatten_alpha(upright, max(COMPOSITE_SIDE, 8 * max(h, w)),
                                               None if spec.digits else spec.background)
                rules += [rule] if rule else []
            image = upright.convert(mode)
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
            return Decoded(pixels[None] if c == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1)), rules, size)
    except StnGluonError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise StnGluonError(f"{name}: not a readable image ({_reason(err)})") from None


def decode_image(data: bytes, size: Tuple[int, int], name: str = "image", max_pixels: int = MAX_PIXELS,
                 check_size: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Image bytes -> grey ``float32 (H, W)`` in [0, 1], resized to ``size`` = (H, W), read as a digit
    model reads it (:func:`decode_pixels` with a 1-channel digit model's :class:`InputSpec`)."""
    h, w = size
    return decode_pixels(data, InputSpec((1, int(h), int(w))), name, max_pixels, check_size).pixels[0]


def _pixel_scale(a: np.ndarray, pixel_range: str, name: str) -> float:
    if pixel_range not in PIXEL_RANGES:
        raise StnGluonError(f"{name}: pixel range {pixel_range!r}; choose {', '.join(PIXEL_RANGES)}")
    if pixel_range == "auto":
        return 255.0 if a.dtype == np.uint8 else 1.0
    return 255.0 if pixel_range == "0-255" else 1.0


def validate_array(arr: Any, input_shape: Sequence[int], pixel_range: str = "auto", name: str = "array") -> np.ndarray:
    """Numbers meant as pixels -> ``float32 (N, C, H, W)`` in [0, 1]; the one validator of arrays.

    Accepts ``(H, W)``, ``(N, H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` matching
    ``input_shape`` = (C, H, W). pixel_range: ``"0-1"`` (values must lie in
    [0, 1]), ``"0-255"`` (in [0, 255], divided by 255) or ``"auto"`` (uint8 is
    0..255, any other dtype 0..1). Refuses, naming ``name``: non-numbers, NaN or
    infinite values, values outside the range (the message gives the range
    found), a shape that does not fit.
    """
    c, h, w = (int(v) for v in input_shape)
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise StnGluonError(f"{name}: expected numbers, got {a.dtype}")
    if np.iscomplexobj(a):
        raise StnGluonError(f"{name}: expected real numbers, got {a.dtype}")
    if a.size == 0:
        raise StnGluonError(f"{name}: empty array of shape {a.shape}")
    scale = _pixel_scale(a, pixel_range, name)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise StnGluonError(f"{name}: contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > scale:
        declared = "0-255" if scale == 255 else "0-1"
        hint = "; pass pixel_range 0-255 for 0..255 values" if scale == 1 and lo >= 0 and hi <= 255 else ""
        raise StnGluonError(f"{name}: values span [{lo:g}, {hi:g}], outside pixel_range {declared}{hint}",
                            params=("pixel_range",))
    a = (a / scale).astype(np.float32)
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


def _read_file(path: str) -> bytes:
    if os.path.isdir(path):
        raise StnGluonError(f"{path}: is a folder; give image or .npy files (e.g. {os.path.join(path, '*.png')})")
    if not os.path.exists(path):
        raise StnGluonError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise StnGluonError(f"{path}: cannot read ({err.strerror or err})") from None


def _read_npy(path: str, data: bytes, spec: InputSpec, pixel_range: str) -> InputBatch:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise StnGluonError(f"{path}: not a readable .npy file ({_reason(err)})") from None
    pixels = validate_array(arr, spec.input_shape, pixel_range, path)
    return InputBatch.of_arrays(pixels, [path] if len(pixels) == 1 else [f"{path}[{i}]" for i in range(len(pixels))])


def read_inputs(paths: Sequence[str], spec: Union[InputSpec, Sequence[int]], pixel_range: str = "auto",
                max_pixels: int = MAX_PIXELS) -> InputBatch:
    """Files (images or ``.npy``) -> :class:`InputBatch` (pixels ``float32 (N, C, H, W)`` in [0, 1]).

    spec: an :class:`InputSpec` (or a (C, H, W) shape: a digit model's). A ``.npy`` stack of n images gives
    n rows named ``file[i]``. pixel_range applies to ``.npy`` arrays (see :func:`validate_array`); images are
    0..255, decoded by :func:`decode_pixels`.
    """
    spec = as_spec(spec)
    parts = []
    for path in map(str, paths):
        data = _read_file(path)
        if path.lower().endswith(".npy"):
            parts.append(_read_npy(path, data, spec, pixel_range))
        else:
            one = decode_pixels(data, spec, path, max_pixels=max_pixels)
            parts.append(InputBatch(one.pixels[None], [path], [one.rules], [one.size]))
    return InputBatch.join(parts)


def load_inputs(paths: Sequence[str], input_shape: Sequence[int], pixel_range: str = "auto",
                max_pixels: int = MAX_PIXELS) -> Tuple[np.ndarray, List[str]]:
    """Files (images or ``.npy``) -> ``(pixels float32 (N, C, H, W) in [0, 1], names)``, read as a digit
    model of ``input_shape`` reads them (:func:`read_inputs` has the rules and any model's spec)."""
    batch = read_inputs(paths, input_shape, pixel_range, max_pixels)
    return batch.pixels, batch.names


def looks_dark_on_light(image: np.ndarray) -> bool:
    """Whether ``image`` ``(C, H, W)`` or ``(H, W)`` in [0, 1] is drawn dark on a light background.

    The background is the median of a frame along the border (robust to strokes
    that touch the edge); the image is dark on light when that background is
    light (>= 0.5) and the whole image is darker on average than its background
    (the strokes pull the mean down). A blank image is never called dark on light.
    """
    grey = np.asarray(image, dtype=np.float32)
    if grey.ndim == 3:
        grey = grey[0] if len(grey) == 1 else grey.mean(axis=0)
    h, w = grey.shape
    k = max(1, min(h, w) // 14)
    frame = np.concatenate((grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()))
    lo, hi = (frame.size - 1) // 2, frame.size // 2  # the median, without np.median's overhead (per request)
    middle = np.partition(frame, (lo, hi))
    background = 0.5 * (float(middle[lo]) + float(middle[hi]))
    return background >= 0.5 and float(grey.mean()) < background - 1e-3


def apply_polarity(pixels: np.ndarray, invert: Invert = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, C, H, W)`` in [0, 1] -> ``(pixels light on dark, inverted bool (N,))``.

    invert: ``"auto"`` inverts the images that :func:`looks_dark_on_light`;
    ``True`` inverts all, ``False`` none.
    """
    n = len(pixels)
    if invert == "auto":
        flags = np.array([looks_dark_on_light(p) for p in pixels], dtype=bool)
    elif invert is True or invert is False:
        flags = np.full(n, invert, dtype=bool)
    else:
        raise StnGluonError(f"invert={invert!r}: expected 'auto', True or False")
    if not flags.any():
        return pixels, flags
    out = pixels.copy()
    out[flags] = 1.0 - out[flags]
    return out, flags


def apply_rules(pixels: np.ndarray, rules: Sequence[List[str]], digits: bool,
                invert: Invert = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """The polarity rule of a batch: ``(pixels, inverted bool (N,))``, ``"inverted"`` appended to the ``rules``
    list of each input inverted (in place).

    A digit model's inputs go through :func:`apply_polarity` (``invert``: ``"auto"``, True, False). Those of a
    model that is not a digit model (``digits`` False) are never inverted: ``invert`` True is refused.
    """
    if not digits:
        if invert is True:
            raise StnGluonError("invert: this model is not a digit model (digits: false in its metadata); its "
                                "inputs are never inverted", params=("invert",))
        return pixels, np.zeros(len(pixels), dtype=bool)
    pixels, flags = apply_polarity(pixels, invert)
    for applied, flag in zip(rules, flags):
        if flag:
            applied.append(RULE_INVERTED)
    return pixels, flags


#: The spellings of yes and no taken by ``invert`` (and the server's other 1/0 query flags).
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes"), ("0", "false", "no")


def parse_invert(text: str) -> Invert:
    """``auto``/``1``/``0``/``true``/``false``/``yes``/``no`` (any case) -> ``"auto"``, True or False."""
    value = str(text).strip().lower()
    if value == "auto":
        return "auto"
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise StnGluonError(f"invert={text!r}: expected auto, 1 or 0 (or true/false)")
