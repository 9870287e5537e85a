"""The ``--dataset`` values, and the one loader behind them: MNIST's names, or the user's images from disk.

A dataset is a name of :data:`stn_gluon.data.distortions.DATASETS` (``mnist``, ``cluttered``, ...: read as
before, bit for bit) or a spec: ``folder:PATH``, ``rec:FILE.rec``, ``csv:FILE`` (layouts:
:mod:`stn_gluon.data.listing`). :func:`load_images` returns an :class:`~stn_gluon.data.dataset.ImageDataset`
either way. For data from disk it:

1. lists the files (errors: one line naming the file), and the test set of ``LoadOptions.test`` if given;
2. looks for the decoded set in the cache (``$STN_GLUON_CACHE`` or ``~/.mxnet/datasets/stn_gluon``, as the
   distorted sets; under ``images/``), keyed by every file's name, size and mtime and the decoding options;
3. on a miss, reads each image's header (in a process pool): unreadable ones are refused (their count and the
   first few names) or, with ``skip_unreadable``, left out and counted; the input size (``input_size``, else
   the training images' size when they all share one, else the median of their sizes) and channels (``auto``:
   3 if any image is stored in colour) are chosen; then decodes every image once (pool again) into ``uint8``
   arrays and writes them to the cache atomically (``np.savez``; read back with ``allow_pickle=False``).
   A set whose pixels would exceed ``memory_limit_mb`` is not decoded: it stays on disk
   (:class:`~stn_gluon.data.images.FileImages`) and is streamed in batches (:mod:`stn_gluon.data.streaming`);
4. splits a seeded, stratified ``val_split`` off the training images where the data has no ``val`` split, and
   computes the per-channel mean and std on the training split (:func:`~stn_gluon.data.normalization.channel_stats`).
"""
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._runtime.errors import ConfigError, DataError
from .._runtime.files import atomic_path
from ..nn.architecture import MNIST_MEAN, MNIST_STD
from .dataset import ImageDataset
from .distortions import DATASETS, distortions_cache_dir, load_dataset
from .images import FileImages, ImageSource, Probe, Unreadable, decode_many, probe_many, verify_many
from .listing import Split, list_csv, list_folder, list_rec, read_rec
from .normalization import ChannelValues, channel_stats

__all__ = ["KINDS", "DataSpec", "LoadOptions", "parse_spec", "parse_input_size", "load_images", "load_from_disk",
           "load_for_model", "recorded_options", "RECORDED_OPTIONS", "images_cache_dir", "split_off", "SPEC_HELP"]

log = logging.getLogger(__name__)

#: The kinds of dataset from disk: ``KIND:PATH``.
KINDS = ("folder", "rec", "csv")
SPEC_HELP = f"{', '.join(DATASETS)}, or from disk: folder:PATH, rec:FILE.rec, csv:FILE"
#: Version of the cache's contents: a change of how images are decoded changes it.
CACHE_VERSION = 1
#: Images the mean and std of a streamed set are computed on (a seeded sample).
STATS_SAMPLE = 2000
_SIDE = (4, 4096)


@dataclass(frozen=True)
class DataSpec:
    """A dataset from disk: ``kind`` (:data:`KINDS`) and its absolute ``path``."""
    kind: str
    path: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_spec(text: str, param: str = "dataset") -> Optional[DataSpec]:
    """``text`` -> :class:`DataSpec`, or ``None`` for a name of :data:`DATASETS`; anything else is a
    :class:`ConfigError` naming ``param``."""
    if text in DATASETS:
        return None
    kind, sep, path = str(text).partition(":")
    if not sep or kind not in KINDS or not path.strip():
        raise ConfigError(param, f"{text!r}: choose {SPEC_HELP}")
    if kind == "rec" and not path.endswith(".rec"):
        raise ConfigError(param, f"{text!r}: rec: names the .rec file (its .idx beside it)")
    return DataSpec(kind, os.path.abspath(os.path.expanduser(path)))


def parse_input_size(text: Any) -> Optional[Tuple[int, int]]:
    """``"32,32"``, ``"32x48"`` or ``"32"`` -> ``(H, W)``; ``None``/empty -> ``None``."""
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or not all(_SIDE[0] <= s <= _SIDE[1] for s in sides):
        raise ConfigError("input_size", f"{text!r}: expected H,W such as 32,32 (sides of {_SIDE[0]} to "
                                        f"{_SIDE[1]} pixels)")
    return (sides[0], sides[-1])


@dataclass(frozen=True)
class LoadOptions:
    """How to read a dataset from disk (the ``train`` flags of the same names).

    input_size ``(H, W)`` (``None``: from the data); channels ``"auto"``, ``"1"`` or ``"3"``; val_split: the
    share of training images held out per class where the data has no ``val`` split (seeded by ``seed``);
    test: a spec of the test set; class_names: a file of one class name per line; skip_unreadable: leave
    unreadable images out instead of refusing; memory_limit_mb: above it the set is streamed from disk;
    csv_path_column / csv_label_column: the CSV's columns (``None``: the usual names); workers: decoding and
    streaming processes; cache_dir: ``None`` for the default; digits: the images are digits like MNIST's
    (MNIST's mean and std, ``digits=True``) instead of photographs (their own statistics).
    """
    input_size: Optional[Tuple[int, int]] = None
    channels: str = "auto"
    val_split: float = 0.1
    seed: int = 42
    test: Optional[str] = None
    class_names: Optional[str] = None
    skip_unreadable: bool = False
    memory_limit_mb: float = 4096.0
    csv_path_column: Optional[str] = None
    csv_label_column: Optional[str] = None
    workers: int = 2
    cache_dir: Optional[str] = None
    digits: bool = False


#: The options that apply to datasets from disk only, and their values that mean "not set".
_DISK_ONLY = dict(input_size=None, channels="auto", test=None, class_names=None, skip_unreadable=False,
                  csv_path_column=None, csv_label_column=None, digits=False)


def load_images(spec: str, options: LoadOptions = LoadOptions(), data_dir: Optional[str] = None,
                download: bool = False) -> ImageDataset:
    """The dataset ``spec`` names (a :data:`DATASETS` name or ``folder:``/``rec:``/``csv:``) -> ImageDataset."""
    parsed = parse_spec(spec)
    if parsed is None:
        for name, unset in _DISK_ONLY.items():
            if getattr(options, name) != unset:
                param = "test_dataset" if name == "test" else name
                raise ConfigError(param, f"applies to datasets from disk (folder:, rec:, csv:), not {spec}")
        return load_dataset(spec, data_dir, download=download)
    return load_from_disk(parsed, options)


#: The fields of :class:`LoadOptions` a model records (``model.json``'s ``data_options``): how its data was read.
RECORDED_OPTIONS = ("val_split", "seed", "test", "class_names", "skip_unreadable", "csv_path_column",
                    "csv_label_column", "digits")


def recorded_options(options: LoadOptions) -> Dict[str, Any]:
    """``options`` as a model records them (:data:`RECORDED_OPTIONS`; JSON-able)."""
    return {k: getattr(options, k) for k in RECORDED_OPTIONS}


def load_for_model(spec: str, input_shape: Sequence[int], data_dir: Optional[str] = None, download: bool = False,
                   options: Optional[Dict[str, Any]] = None) -> ImageDataset:
    """The dataset ``spec`` as a trained model with input ``(C, H, W)`` reads it (``model.json``'s ``dataset``,
    ``input_shape`` and ``data_options``, :func:`recorded_options`): a named dataset as :func:`load_images`
    reads it; one from disk decoded at that size and channels, with the options its training used, but for a
    names file: the classes keep the data's own names (the model's are in its ``model.json``, and the file need
    not be where it was)."""
    if parse_spec(spec) is None:
        return load_images(spec, data_dir=data_dir, download=download)
    c, h, w = (int(v) for v in input_shape)
    recorded = {k: v for k, v in (options or {}).items() if k in RECORDED_OPTIONS and k != "class_names"}
    return load_images(spec, LoadOptions(input_size=(h, w), channels=str(c), **recorded))


def images_cache_dir(options: LoadOptions = LoadOptions()) -> str:
    """Where decoded datasets are cached: ``images/`` under the distorted sets' cache root."""
    root = options.cache_dir or os.environ.get("STN_GLUON_CACHE") or distortions_cache_dir()
    return os.path.join(root, "images")


def _list(spec: DataSpec, options: LoadOptions, test: bool = False) -> Dict[str, Split]:
    if spec.kind == "folder":
        return list_folder(spec.path, test=test)
    split = (list_csv(spec.path, options.csv_path_column, options.csv_label_column) if spec.kind == "csv"
             else list_rec(spec.path))
    return {"test" if test else "train": split}


@dataclass
class _Decoded:
    """A dataset's splits decoded (or kept on disk), before the val split and the statistics."""
    images: Dict[str, Any]
    labels: Dict[str, np.ndarray]
    classes: List[str]
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    streamed: bool = False


def load_from_disk(spec: DataSpec, options: LoadOptions = LoadOptions()) -> ImageDataset:
    """A dataset from disk (:class:`DataSpec`), read as the module docs say -> ImageDataset (``digits`` as
    ``options.digits``)."""
    splits = _list(spec, options)
    notes: List[str] = []
    source = str(spec)
    if options.test:
        test_spec = parse_spec(options.test, "test_dataset")
        if test_spec is None:
            raise ConfigError("test_dataset", f"{options.test!r}: a test set from disk: folder:PATH, rec:FILE.rec "
                                              f"or csv:FILE")
        if "test" in splits:
            notes.append(f"Test split: {test_spec} (not {splits['test'].where})")
        splits["test"] = _list(test_spec, options, test=True)["test"]
        source += f" + test {test_spec}"
    if not {"val", "test"} & set(splits) and options.val_split == 0:
        raise ConfigError("val_split", f"is 0 and {source} has no val or test split: nothing to evaluate on "
                                       f"(give test_dataset, or val_split > 0)")
    names = _read_names(options.class_names)
    path = _cache_path(spec, splits, options)
    decoded = _read_cache(path, options)
    if decoded is None:
        decoded = _decode(splits, options)
        _check_names(names, decoded.classes, options.class_names)
        _write_cache(path, decoded)
    else:
        count = sum(len(v) for v in decoded.labels.values())
        what = f"where the {count} images are" if decoded.streamed else f"{count} decoded images"
        decoded.notes.append(f"Read {what} from the cache {path if not decoded.streamed else _streamed_path(path)}")
    _check_names(names, decoded.classes, options.class_names)
    decoded.notes = notes + decoded.notes
    dataset = _assemble(source, decoded, options)
    if names:  # renamed: the data's own names are kept too (evaluating another folder compares them)
        dataset.class_folders, dataset.classes = dataset.classes, names
    return dataset


# ---- the cache ----

def _cache_path(spec: DataSpec, splits: Dict[str, Split], options: LoadOptions) -> str:
    """The cache file of ``splits`` read with ``options``: named after the data, keyed by every file."""
    key = dict(version=CACHE_VERSION, splits={k: [s.kind, s.where, s.stamps] for k, s in sorted(splits.items())})
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(images_cache_dir(options), f"{_cache_stem(spec, options)}-{digest}.npz")


def _cache_stem(spec: DataSpec, options: LoadOptions) -> str:
    """The part of a cache file's name that stays when the files change (older versions are replaced): the data
    and how it is decoded (other decoding options keep entries of their own)."""
    how = (spec, options.test, options.input_size, options.channels, options.skip_unreadable,
           options.csv_path_column, options.csv_label_column)
    ident = hashlib.sha256(repr(how).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(spec.path.rstrip("/")))[:40]
    return f"{spec.kind}-{name}-{ident}"


#: The notes a cache keeps: what was chosen when it was made.
_CHOICES = ("Input size", "Channels", "Streaming")


def _write_cache(path: str, decoded: _Decoded) -> None:
    """Write ``decoded`` to the cache (a streamed set: where its images are, and that they all decode), then
    remove the same data's older versions."""
    arrays: Dict[str, np.ndarray] = dict(classes=np.asarray(decoded.classes, dtype=str),
                                         skipped=np.asarray(decoded.skipped, dtype=str),
                                         notes=np.asarray([n for n in decoded.notes if n.startswith(_CHOICES)],
                                                          dtype=str))
    for name, images in decoded.images.items():
        arrays[f"{name}_labels"] = decoded.labels[name]
        if isinstance(images, FileImages):
            arrays.update({f"{name}_{k}": v for k, v in images.stored().items()})
            arrays["streamed"] = np.asarray(images.size + (images.channels,), np.int64)
        else:
            arrays[f"{name}_images"] = images
    path = _streamed_path(path) if decoded.streamed else path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    stem = os.path.basename(path).rsplit("-", 1)[0]
    for old in os.listdir(os.path.dirname(path)):  # the same data's older versions
        if old.startswith(stem + "-") and old.endswith(".npz") and old != os.path.basename(path):
            try:
                os.remove(os.path.join(os.path.dirname(path), old))
            except OSError:
                pass
    if not decoded.streamed:
        decoded.notes.append(f"Cached the decoded images in {path}")


def _streamed_path(path: str) -> str:
    """The cache file of a streamed set (where its images are, not their pixels) beside ``path``."""
    return path[:-len(".npz")] + ".files.npz"


def _read_cache(path: str, options: LoadOptions) -> Optional[_Decoded]:
    """The cached dataset at ``path`` (its pixels, where they fit ``memory_limit_mb``; else where its images are,
    if it was streamed), or ``None`` (with a warning where the file is unreadable)."""
    limit = options.memory_limit_mb * 2 ** 20
    if os.path.exists(path) and os.path.getsize(path) <= limit:
        return _read_npz(path, None)
    if os.path.exists(_streamed_path(path)):
        return _read_npz(_streamed_path(path), limit)
    return None


def _read_npz(path: str, limit: Optional[float]) -> Optional[_Decoded]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # zip, key or format errors: all mean a bad file, decoded again
        log.warning("%s: unreadable dataset cache (%s); decoding the images again", path,
                    str(err).splitlines()[0][:120] if str(err) else type(err).__name__)
        return None
    names = sorted({k.rsplit("_", 1)[0] for k in arrays if k.endswith("_labels")})
    labels = {k: arrays[f"{k}_labels"].astype(np.int32) for k in names}
    if "streamed" in arrays:
        h, w, c = (int(v) for v in arrays["streamed"])
        if limit is not None and sum(len(v) for v in labels.values()) * h * w * c <= limit:
            return None  # it fits in memory now: decoded
        parts = {k: {f: arrays[f"{k}_{f}"] for f in ("files", "rec", "keys") if f"{k}_{f}" in arrays} for k in names}
        images: Dict[str, Any] = {k: FileImages.from_stored(parts[k], (h, w), c) for k in names}
    else:
        images = {k: arrays.get(f"{k}_images") for k in names}
    if "train" not in images or any(isinstance(a, np.ndarray) and (a.dtype != np.uint8 or a.ndim != 4)
                                    or a is None for a in images.values()):
        log.warning("%s: not a dataset cache; decoding the images again", path)
        return None
    return _Decoded(images, labels, [str(c) for c in arrays["classes"]], [str(s) for s in arrays["skipped"]],
                    [str(n) for n in arrays["notes"]], streamed="streamed" in arrays)


# ---- decoding ----

def _refuse_or_skip(bad: Sequence[Tuple[str, Unreadable]], options: LoadOptions) -> None:
    """Unreadable images: an error (count, first names) unless ``skip_unreadable``."""
    if not bad or options.skip_unreadable:
        return
    first = bad[0][1]
    others = ", ".join(os.path.basename(u.name) for _, u in bad[1:4]) + (", ..." if len(bad) > 4 else "")
    raise DataError(f"{len(bad)} unreadable image(s): {first.name} ({first.reason})"
                    f"{'; also ' + others if others else ''}; skip_unreadable leaves them out",
                    params=("skip_unreadable",))


def _drop(splits: Dict[str, Split], sources: Dict[str, List[ImageSource]], bad: Sequence[Tuple[str, Unreadable]],
          probes: Optional[Dict[str, List[Optional[Probe]]]] = None) -> List[str]:
    """Leave the unreadable images out of ``sources``, their splits' labels (and ``probes``); their names."""
    for name in {s for s, _ in bad}:
        gone = {u.position for s, u in bad if s == name}
        keep = [i for i in range(len(sources[name])) if i not in gone]
        sources[name] = [sources[name][i] for i in keep]
        splits[name].sources = [splits[name].sources[i] for i in keep]
        splits[name].labels = splits[name].labels[keep]
        if probes is not None:
            probes[name] = [probes[name][i] for i in keep]
    return [u.name for _, u in bad]


def _probe(sources: Dict[str, List[ImageSource]], workers: int
           ) -> Tuple[Dict[str, List[Optional[Probe]]], List[Tuple[str, Unreadable]]]:
    probes: Dict[str, List[Optional[Probe]]] = {}
    bad: List[Tuple[str, Unreadable]] = []
    for name, items in sources.items():
        probes[name], wrong = probe_many(items, workers)
        bad += [(name, u) for u in wrong]
    return probes, bad


def _choose_size(probes: Sequence[Optional[Probe]], given: Optional[Tuple[int, int]]) -> Tuple[Tuple[int, int], str]:
    if given:
        return given, f"Input size {given[0]}x{given[1]} (--input-size)"
    sizes = np.asarray([(p.height, p.width) for p in probes if p is not None], dtype=np.int64).reshape(-1, 2)
    if len(sizes) and (sizes == sizes[0]).all():
        h, w = int(sizes[0, 0]), int(sizes[0, 1])
        return (h, w), f"Input size {h}x{w}: every training image's size (--input-size H,W to choose another)"
    h, w = (int(v) for v in np.round(np.median(sizes, axis=0)))
    lo, hi = sizes.min(axis=0), sizes.max(axis=0)
    return (h, w), (f"Input size {h}x{w}: the median of the training images' sizes ({lo[0]}x{lo[1]} to "
                    f"{hi[0]}x{hi[1]}); --input-size H,W to choose another")


def _choose_channels(probes: Dict[str, List[Optional[Probe]]], given: str) -> Tuple[int, str]:
    if given != "auto":
        return int(given), f"Channels: {given} (--channels)"
    if any(p is not None and p.colour for ps in probes.values() for p in ps):
        return 3, "Channels: 3 (colour images found; --channels 1 reads them grey)"
    return 1, "Channels: 1 (every image is grey; --channels 3 to choose colour)"


def _decode(splits: Dict[str, Split], options: LoadOptions) -> _Decoded:
    """List, probe, choose, decode (or keep on disk): every split of ``splits``."""
    payloads = {name: read_rec(s) for name, s in splits.items() if s.kind == "rec"}
    classes = splits["train"].own_classes()
    for split in splits.values():
        split.resolve(classes)
    sources: Dict[str, List[ImageSource]] = {k: list(payloads.get(k) or s.sources) for k, s in splits.items()}
    count = sum(len(v) for v in sources.values())
    given = options.input_size is not None and options.channels != "auto"
    over = given and _too_big(count, options.input_size or (0, 0), int(options.channels), options)
    probes: Dict[str, List[Optional[Probe]]] = {}
    skipped: List[str] = []
    unopened: List[Tuple[str, Unreadable]] = []
    if not given or over:  # the headers: the size and channels, or (streamed) the check that they open
        probes, unopened = _probe(sources, options.workers)
        skipped = _drop(splits, sources, unopened, probes)  # refused below, with those that do not decode
        if not sources["train"]:
            _refuse_or_skip(unopened, options)
            raise DataError(f"{splits['train'].where}: none of its images is readable")
    size, size_note = _choose_size(probes.get("train", []), options.input_size)
    channels, channels_note = _choose_channels(probes, options.channels)
    count = sum(len(v) for v in sources.values())
    notes = [size_note, channels_note]
    if _too_big(count, size, channels, options):
        return _keep_on_disk(splits, sources, size, channels, options, unopened, _Decoded(
            {}, {}, classes, skipped, notes + [f"Streaming from disk: the decoded images "
                                               f"({count * channels * size[0] * size[1] / 2**20:,.1f} MB) exceed "
                                               f"--memory-limit-mb {options.memory_limit_mb:g}"], streamed=True))
    tic = time.perf_counter()
    images: Dict[str, Any] = {}
    bad = []
    for name, items in sources.items():
        images[name], wrong = decode_many(items, size, channels, options.workers)
        bad += [(name, u) for u in wrong]
    _refuse_or_skip(unopened + bad, options)
    gone = {(s, u.position) for s, u in bad}
    for name in {s for s, _ in bad}:
        images[name] = images[name][[i for i in range(len(images[name])) if (name, i) not in gone]]
    skipped += _drop(splits, sources, bad)
    notes.append(f"Decoded {sum(len(v) for v in images.values())} images in {time.perf_counter() - tic:.1f} s")
    return _Decoded(images, {k: s.labels for k, s in splits.items()}, classes, skipped, notes)


def _keep_on_disk(splits: Dict[str, Split], sources: Dict[str, List[ImageSource]], size: Tuple[int, int],
                  channels: int, options: LoadOptions, unopened: List[Tuple[str, Unreadable]],
                  decoded: _Decoded) -> _Decoded:
    """A set too large for memory: every image decoded once to find the unreadable ones (refused, or left out),
    then kept on disk (:class:`FileImages`)."""
    bad = []
    for name, items in sources.items():
        bad += [(name, u) for u in verify_many(items, size, channels, options.workers)]
    _refuse_or_skip(unopened + bad, options)
    decoded.skipped += _drop(splits, sources, bad)
    decoded.images = {k: FileImages(s.sources, size, channels) for k, s in splits.items()}
    decoded.labels = {k: s.labels for k, s in splits.items()}
    return decoded


def _too_big(count: int, size: Tuple[int, int], channels: int, options: LoadOptions) -> bool:
    return count * channels * size[0] * size[1] > options.memory_limit_mb * 2 ** 20


# ---- the dataset ----

def split_off(labels: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified split: ``(kept, held out)`` sorted index arrays, ``round(fraction * n_c)`` of each
    class's ``n_c`` images held out (at most ``n_c - 1``)."""
    rng = np.random.RandomState(seed)
    held: List[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(int(round(len(members) * fraction)), len(members) - 1)
        if k > 0:
            held.append(rng.permutation(members)[:k])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), out), out


def _take(images: Any, index: np.ndarray) -> Any:
    return images.subset(index) if isinstance(images, FileImages) else images[index]


def _read_names(path: Optional[str]) -> List[str]:
    """The class names in ``path``, one a line (blank lines skipped); ``[]`` without a file."""
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable class-names file ({str(err).splitlines()[0][:80]})",
                        params=("class_names",)) from None
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name appears twice", params=("class_names",))
    return names


def _check_names(names: List[str], found: List[str], path: Optional[str]) -> None:
    """Refuse class names that are not one per class of the data."""
    if names and len(names) != len(found):
        raise DataError(f"{path}: {len(names)} class names for the {len(found)} classes of the data "
                        f"({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})", params=("class_names",))


def _stats(images: Any, seed: int, notes: List[str]) -> Tuple[ChannelValues, ChannelValues]:
    """Per-channel mean and std of the training pixels (of a seeded sample, for a streamed set)."""
    if isinstance(images, FileImages) and len(images) > STATS_SAMPLE:
        pick = np.sort(np.random.RandomState(seed).choice(len(images), STATS_SAMPLE, replace=False))
        notes.append(f"Mean and std: of a seeded sample of {STATS_SAMPLE} training images")
        return channel_stats(images[pick])
    return channel_stats(images if isinstance(images, np.ndarray) else images[:])


def _assemble(source: str, decoded: _Decoded, options: LoadOptions) -> ImageDataset:
    """The :class:`ImageDataset` of ``decoded``: the val split, the statistics, the class names."""
    images, labels, notes = decoded.images, decoded.labels, list(decoded.notes)
    train_x, train_y = images["train"], labels["train"]
    val_x, val_y = images.get("val"), labels.get("val")
    if val_y is None and options.val_split > 0:
        kept, held = split_off(train_y, options.val_split, options.seed)
        if len(held):
            val_x, val_y = _take(train_x, held), train_y[held]
            train_x, train_y = _take(train_x, kept), train_y[kept]
            notes.append(f"Validation: a seeded {100 * options.val_split:g} % of each class's training images "
                         f"({len(held)}; --val-split)")
    test_x, test_y = images.get("test"), labels.get("test")
    if test_y is None:
        if val_y is None:
            raise ConfigError("val_split", f"is 0 and {source} has no val or test split: nothing to evaluate on "
                                           f"(give test_dataset, or val_split > 0)")
        notes.append("No test split: the final report is on the validation split (--test-dataset gives one)")
        test_x, test_y = np.zeros((0,) + tuple(train_x.shape[1:]), np.uint8), np.zeros(0, np.int32)
    mean: ChannelValues
    std: ChannelValues
    if options.digits:
        mean, std = MNIST_MEAN, MNIST_STD
        notes.append("Digits: normalised with MNIST's mean and std, a black background (--digits)")
    else:
        mean, std = _stats(train_x, options.seed, notes)
    if decoded.skipped:
        notes.append(f"Skipped {len(decoded.skipped)} unreadable image(s) (--skip-unreadable): "
                     f"{', '.join(decoded.skipped[:3])}{', ...' if len(decoded.skipped) > 3 else ''}")
    return ImageDataset(train_x, train_y, test_x, test_y, source, classes=decoded.classes,
                        mean=mean, std=std, digits=options.digits, val_images=val_x, val_labels=val_y,
                        skipped=len(decoded.skipped), notes=notes)
