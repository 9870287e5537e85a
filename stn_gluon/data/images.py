"""Image files and RecordIO records -> ``uint8 (C, H, W)`` pixels: probing, decoding (in a process pool), and
:class:`FileImages`, an array-like that decodes on demand (for sets larger than the memory limit).

Every image is decoded the same way wherever it comes from: PIL opens it (PNG, JPEG, PPM, BMP, ...), its EXIF
orientation is applied, transparency is composited onto black, it is converted to grey (``L``) or ``RGB`` and
resized to ``(H, W)`` bilinearly (PIL's resampling, antialiased when it shrinks) without keeping the aspect ratio,
as GTSRB's images are usually resized. A file PIL cannot open, or one that ends early (a truncated PNG or JPEG),
is *unreadable*: the readers collect those instead of raising, so that the caller can name them together.
"""
import contextlib
import io
import multiprocessing
import os
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "RecordRef", "ImageSource", "Probe", "Unreadable", "decode_bytes", "read_source",
           "probe_source", "probe_many", "decode_many", "verify_many", "FileImages", "source_name"]

#: The file name endings read as images (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
#: Below this many images a pool costs more than it saves.
POOL_MIN = 256
#: Images per task of the pool.
CHUNK = 64


class RecordRef(NamedTuple):
    """One record of an indexed RecordIO file (``mx.recordio.MXIndexedRecordIO``): its ``.rec``, ``.idx``, key."""
    rec: str
    idx: str
    key: int


#: Where an image comes from: a file path, a record, or its encoded bytes already read.
ImageSource = Union[str, RecordRef, bytes]


class Probe(NamedTuple):
    """What an image's header says: its size and whether it is stored in colour."""
    height: int
    width: int
    colour: bool


class Unreadable(NamedTuple):
    """An image that could not be read: its position in the list, its name, why."""
    position: int
    name: str
    reason: str


def source_name(source: ImageSource) -> str:
    """How messages name ``source``: the file, ``FILE.rec#KEY`` for a record."""
    if isinstance(source, RecordRef):
        return f"{source.rec}#{source.key}"
    return source if isinstance(source, str) else "image bytes"


_OPEN_RECORDS: Dict[Tuple[str, int], Any] = {}


def _record_bytes(ref: RecordRef) -> bytes:
    """The image bytes of record ``ref`` (the record file opened once per process)."""
    import mxnet as mx

    key = (ref.rec, os.getpid())
    reader = _OPEN_RECORDS.get(key)
    if reader is None:
        reader = _OPEN_RECORDS[key] = mx.recordio.MXIndexedRecordIO(ref.idx, ref.rec, "r")
    _, payload = mx.recordio.unpack(reader.read_idx(ref.key))
    return bytes(payload)


def read_source(source: ImageSource) -> bytes:
    """The encoded bytes of ``source``."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, RecordRef):
        return _record_bytes(source)
    with open(source, "rb") as f:
        return f.read()


def _is_colour(img: Any) -> bool:
    if img.mode == "P":
        palette = np.asarray(img.getpalette() or [0, 0, 0], dtype=np.int32).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return img.mode not in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if text.startswith("cannot identify image file"):
        return "not an image PIL can read"
    return text[:100]


def probe_source(source: ImageSource) -> Probe:
    """The header of ``source`` -> :class:`Probe` (no pixel decoded). Raises ``OSError``/``ValueError``."""
    from PIL import Image

    data = read_source(source)
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotated by 90 degrees: decoded upright
            w, h = h, w
        return Probe(int(h), int(w), _is_colour(img))


def _flatten(img: Any, mode: str) -> Any:
    """``img`` as ``mode`` (``L`` or ``RGB``), transparency composited onto black."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    return img.convert(mode)


@contextlib.contextmanager
def _truncation_refused() -> Iterator[None]:
    """PIL refuses truncated files while this lasts: gluoncv, once imported, tells PIL to pad them silently
    (``ImageFile.LOAD_TRUNCATED_IMAGES = True``, a process-wide switch), which would hide a damaged image."""
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def decode_bytes(data: bytes, size: Tuple[int, int], channels: int) -> np.ndarray:
    """Encoded image bytes -> ``uint8 (channels, H, W)``, ``size = (H, W)``; raises ``OSError``/``ValueError``
    (PIL's) when they are not a whole readable image."""
    from PIL import Image, ImageOps

    h, w = size
    with Image.open(io.BytesIO(data)) as img, _truncation_refused():
        img.draft("L" if channels == 1 else "RGB", (w, h))  # JPEG: decode at a reduced size where it can
        img.load()  # a truncated file raises here
        upright = _flatten(ImageOps.exif_transpose(img), "L" if channels == 1 else "RGB")
        if upright.size != (w, h):
            upright = upright.resize((w, h), Image.Resampling.BILINEAR)
        pixels = np.asarray(upright, dtype=np.uint8)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)


def _probe_chunk(task: Tuple[int, Sequence[ImageSource]]) -> Tuple[List[Optional[Probe]], List[Unreadable]]:
    start, sources = task
    probes: List[Optional[Probe]] = []
    bad: List[Unreadable] = []
    for i, source in enumerate(sources):
        try:
            probes.append(probe_source(source))
        except _ERRORS as err:
            probes.append(None)
            bad.append(Unreadable(start + i, source_name(source), _reason(err)))
    return probes, bad


def _decode_chunk(task: Tuple[int, Sequence[ImageSource], Tuple[int, int], int]
                  ) -> Tuple[np.ndarray, List[Unreadable]]:
    start, sources, size, channels = task
    out = np.zeros((len(sources), channels) + tuple(size), np.uint8)
    bad: List[Unreadable] = []
    for i, source in enumerate(sources):
        try:
            out[i] = decode_bytes(read_source(source), size, channels)
        except _ERRORS as err:
            bad.append(Unreadable(start + i, source_name(source), _reason(err)))
    return out, bad


def _map(fn: Callable[[Any], Any], tasks: List[Any], workers: int) -> List[Any]:
    """``fn`` over ``tasks``, in a pool of ``workers`` forked processes where there is enough work."""
    if workers <= 1 or sum(len(t[1]) for t in tasks) < POOL_MIN:
        return [fn(t) for t in tasks]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(fn, tasks, chunksize=1)


def _tasks(sources: Sequence[ImageSource]) -> List[Tuple[int, Sequence[ImageSource]]]:
    return [(i, list(sources[i:i + CHUNK])) for i in range(0, len(sources), CHUNK)]


def probe_many(sources: Sequence[ImageSource], workers: int = 2) -> Tuple[List[Optional[Probe]], List[Unreadable]]:
    """The headers of ``sources`` (``None`` where unreadable), and the unreadable ones."""
    probes: List[Optional[Probe]] = []
    bad: List[Unreadable] = []
    for got, wrong in _map(_probe_chunk, _tasks(sources), workers):
        probes += got
        bad += wrong
    return probes, bad


def _verify_chunk(task: Tuple[int, Sequence[ImageSource], Tuple[int, int], int]) -> List[Unreadable]:
    start, sources, size, channels = task
    bad: List[Unreadable] = []
    for i, source in enumerate(sources):
        try:
            decode_bytes(read_source(source), size, channels)
        except _ERRORS as err:
            bad.append(Unreadable(start + i, source_name(source), _reason(err)))
    return bad


def verify_many(sources: Sequence[ImageSource], size: Tuple[int, int], channels: int,
                workers: int = 2) -> List[Unreadable]:
    """Decode every one of ``sources`` once, keeping nothing: the unreadable ones (a truncated file opens)."""
    tasks = [(start, chunk, tuple(size), channels) for start, chunk in _tasks(sources)]
    return [u for wrong in _map(_verify_chunk, tasks, workers) for u in wrong]


def decode_many(sources: Sequence[ImageSource], size: Tuple[int, int], channels: int,
                workers: int = 2) -> Tuple[np.ndarray, List[Unreadable]]:
    """``sources`` decoded -> ``uint8 (N, channels, H, W)`` (zeros where unreadable), and the unreadable ones."""
    tasks = [(start, chunk, tuple(size), channels) for start, chunk in _tasks(sources)]
    out = np.zeros((len(sources), channels) + tuple(size), np.uint8)
    bad: List[Unreadable] = []
    for (start, chunk, _, _), (pixels, wrong) in zip(tasks, _map(_decode_chunk, tasks, workers)):
        out[start:start + len(chunk)] = pixels
        bad += wrong
    return out, bad


class FileImages:
    """``uint8 (N, C, H, W)`` pixels decoded from ``sources`` when indexed, never all at once.

    Array-like enough for the batch iterators and :class:`~stn_gluon.data.dataset.ImageDataset`: ``len``,
    ``shape``, ``ndim``, ``dtype``, and indexing by an int (one ``(C, H, W)`` image), a slice or an index array
    (``(n, C, H, W)``). Picklable (worker processes decode from it). An image that turns out unreadable here
    raises ``OSError`` naming it.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, sources: Sequence[ImageSource], size: Tuple[int, int], channels: int) -> None:
        self.sources = list(sources)
        self.size = (int(size[0]), int(size[1]))
        self.channels = int(channels)

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (len(self.sources), self.channels) + self.size

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.sources)

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` -> ``uint8 (C, H, W)``."""
        source = self.sources[i]
        try:
            return decode_bytes(read_source(source), self.size, self.channels)
        except _ERRORS as err:
            raise OSError(f"{source_name(source)}: unreadable image ({_reason(err)})") from None

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.read(int(index))
        picked = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).reshape(-1)
        out = np.empty((len(picked), self.channels) + self.size, np.uint8)
        for k, i in enumerate(picked):
            out[k] = self.read(int(i))
        return out

    def stored(self) -> Dict[str, np.ndarray]:
        """Where the images are, as arrays ``np.savez`` writes (:meth:`from_stored` reads them back)."""
        if all(isinstance(s, str) for s in self.sources):
            return dict(files=np.asarray(self.sources, dtype=str))
        refs = [s for s in self.sources if isinstance(s, RecordRef)]
        if len(refs) != len(self.sources) or len({(r.rec, r.idx) for r in refs}) != 1:
            raise ValueError("FileImages.stored: files, or records of one RecordIO file")
        return dict(rec=np.asarray([refs[0].rec, refs[0].idx], dtype=str),
                    keys=np.asarray([r.key for r in refs], dtype=np.int64))

    @classmethod
    def from_stored(cls, arrays: Dict[str, np.ndarray], size: Tuple[int, int], channels: int) -> "FileImages":
        """The :class:`FileImages` that :meth:`stored` described."""
        if "files" in arrays:
            return cls([str(f) for f in arrays["files"]], size, channels)
        rec, idx = (str(v) for v in arrays["rec"])
        return cls([RecordRef(rec, idx, int(k)) for k in arrays["keys"]], size, channels)

    def subset(self, index: np.ndarray) -> "FileImages":
        """The images at ``index``, still on disk."""
        return FileImages([self.sources[int(i)] for i in index], self.size, self.channels)
