"""Reading inputs the way a person meant them: images, arrays, polarity.

Every input ends as pixels ``float32 (N, C, H, W)`` in [0, 1], light digits
on a dark background like MNIST:

* images (PNG, JPEG, BMP, GIF, TIFF, WebP, ...): an alpha channel is
  composited onto a background that contrasts with the visible strokes (white
  behind dark strokes, black behind light ones), then the image is converted to
  grey and resized to the model's input size;
* arrays (``.npy`` files, the server's JSON instances): checked by one
  validator, :func:`validate_array` (dtype, NaN/inf, value range, shape);
* polarity: :func:`apply_polarity` inverts dark-on-light inputs, detected by
  :func:`looks_dark_on_light`, unless the caller forces either way.

Imports only NumPy (and Pillow when decoding images): no MXNet.
"""
import io
import os
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._runtime.errors import StnGluonError

__all__ = ["PIXEL_RANGES", "MAX_PIXELS", "decode_image", "validate_array", "load_inputs",
           "looks_dark_on_light", "apply_polarity", "parse_invert"]

PIXEL_RANGES = ("auto", "0-1", "0-255")  # auto: uint8 is 0..255, any other dtype 0..1
MAX_PIXELS = 64 * 1024 * 1024
IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, TIFF, WebP"
#: An image with transparency is shrunk to at most this side (or 8x the model's input) before its alpha is
#: composited: the compositing's float temporaries stay small whatever the image's size.
COMPOSITE_SIDE = 512

Invert = Union[str, bool]


def _flatten_alpha(img: Any, side: int = COMPOSITE_SIDE) -> Any:
    """A PIL image with transparency -> RGB/L on a background contrasting with its strokes, shrunk first
    (by an integer factor, alpha-weighted) to at most ``side`` pixels a side."""
    from PIL import Image

    rgba = img.convert("RGBA")
    factor = -(-max(rgba.size) // side)
    if factor > 1:
        rgba = rgba.reduce(factor)
    pixels = np.asarray(rgba, dtype=np.float32) / 255.0
    alpha = pixels[..., 3:]
    if alpha.min() >= 1.0:
        return rgba.convert("RGB")
    grey = pixels[..., :3].mean(axis=2, keepdims=True)
    ink = float((grey * alpha).sum() / max(float(alpha.sum()), 1e-6))  # mean brightness of what is drawn
    background = 1.0 if ink < 0.5 else 0.0
    flat = pixels[..., :3] * alpha + background * (1.0 - alpha)
    return Image.fromarray((flat * 255.0 + 0.5).astype(np.uint8), "RGB")


def _has_alpha(img: Any) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if text.startswith("cannot identify image file"):
        return f"unknown or damaged format; expected {IMAGE_FORMATS}, ..."
    return re.sub(r"<[^>]* at 0x[0-9a-fA-F]+>", "the data", text)[:120]


def decode_image(data: bytes, size: Tuple[int, int], name: str = "image", max_pixels: int = MAX_PIXELS,
                 check_size: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Image bytes -> grey ``float32 (H, W)`` in [0, 1], resized to ``size`` = (H, W).

    The EXIF orientation (photos) is applied and transparency composited first
    (see the module docstring). Raises :class:`StnGluonError` naming ``name``
    when the bytes are not a readable image, or it has more than ``max_pixels``. check_size(width, height),
    when given, is called once the header is read, before any pixel is decoded (it may raise).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise StnGluonError(f"{name}: {img.width}x{img.height} pixels is more than the "
                                    f"{max_pixels} allowed")
            if check_size is not None:
                check_size(img.width, img.height)
            if not _has_alpha(img):
                img.draft("L", (max(h, w), max(h, w)))  # JPEG: decode at reduced size when possible
            upright = ImageOps.exif_transpose(img)
            if _has_alpha(upright):
                upright = _flatten_alpha(upright, max(COMPOSITE_SIDE, 8 * max(h, w)))
            grey = upright.convert("L")
            if grey.size != (w, h):
                grey = grey.resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(grey, dtype=np.float32) / 255.0
    except StnGluonError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise StnGluonError(f"{name}: not a readable image ({_reason(err)})") from None


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


def load_inputs(paths: Sequence[str], input_shape: Sequence[int], pixel_range: str = "auto",
                max_pixels: int = MAX_PIXELS) -> Tuple[np.ndarray, List[str]]:
    """Files (images or ``.npy``) -> ``(pixels float32 (N, C, H, W) in [0, 1], names)``.

    A ``.npy`` stack of n images gives n rows named ``file[i]``. pixel_range
    applies to ``.npy`` arrays (see :func:`validate_array`); images are 0..255.
    """
    c, h, w = (int(v) for v in input_shape)
    batches, names = [], []
    for path in map(str, paths):
        data = _read_file(path)
        if path.lower().endswith(".npy"):
            try:
                arr = np.load(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise StnGluonError(f"{path}: not a readable .npy file ({_reason(err)})") from None
            pixels = validate_array(arr, (c, h, w), pixel_range, path)
        else:
            if c != 1:
                raise StnGluonError(f"{path}: the model takes {c} channels; give a .npy array")
            pixels = decode_image(data, (h, w), path, max_pixels=max_pixels)[None, None]
        batches.append(pixels)
        names += [path] if len(pixels) == 1 else [f"{path}[{i}]" for i in range(len(pixels))]
    return np.concatenate(batches), names


def looks_dark_on_light(image: np.ndarray) -> bool:
    """Whether ``image`` ``(C, H, W)`` or ``(H, W)`` in [0, 1] is drawn dark on a light background.

    The background is the median of a frame along the border (robust to strokes
    that touch the edge); the image is dark on light when that background is
    light (>= 0.5) and the whole image is darker on average than its background
    (the strokes pull the mean down). A blank image is never called dark on light.
    """
    grey = np.asarray(image, dtype=np.float32)
    grey = grey.mean(axis=0) if grey.ndim == 3 else grey
    h, w = grey.shape
    k = max(1, min(h, w) // 14)
    frame = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])
    background = float(np.median(frame))
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
