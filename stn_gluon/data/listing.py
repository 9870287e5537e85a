"""What a dataset on disk holds, before any pixel is decoded: its image files (or records), labels and classes.

Three layouts (:mod:`stn_gluon.data.sources` parses the ``--dataset`` values that name them):

- ``folder:PATH``: one sub-folder per class (ImageFolder's layout, GTSRB's training set), images anywhere under
  it (``.png .jpg .jpeg .ppm .bmp``; other files, such as GTSRB's per-class CSV, are ignored). Sub-folders
  ``train``, ``val`` and ``test`` of PATH, when ``train`` is one of them, are the splits, each laid out so.
  Class names are the sub-folders' names, in sorted order (label = position).
- ``csv:FILE``: one row per image, a path (relative to the file's folder) and a label; the separator is the
  header's most frequent of ``;``, tab and ``,``; the columns are named (default: ``Filename`` or ``path``...,
  ``ClassId`` or ``label``...).
- ``rec:FILE.rec``: RecordIO as MXNet's ``im2rec`` writes it, with its ``.idx`` beside it; labels are the
  records' header labels (class indices).

Labels of a test split map onto the training classes (:func:`map_labels`): by name; an integer label onto a
class named by the same integer (GTSRB's ``ClassId`` 12 onto the folder ``00012``), else onto the class at that
position. Every problem is a :class:`~stn_gluon._runtime.errors.DataError` of one line naming the file.
"""
import csv
import io
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._runtime.errors import DataError
from .images import IMAGE_EXTENSIONS, ImageSource, RecordRef

__all__ = ["Split", "list_folder", "list_csv", "list_rec", "read_rec", "map_labels", "stamp",
           "PATH_COLUMNS", "LABEL_COLUMNS", "SPLITS"]

#: The splits a folder may hold, in this order.
SPLITS = ("train", "val", "test")
#: Column names tried, in order, for the image path and the label of a CSV (any case).
PATH_COLUMNS = ("Filename", "path", "file", "filename", "image", "img")
LABEL_COLUMNS = ("ClassId", "label", "class", "classid", "category", "target")
_EXTS = ", ".join(IMAGE_EXTENSIONS)


@dataclass
class Split:
    """One split on disk: where it is (for messages), its images and their labels (class indices).

    A RecordIO split is listed without reading it (``sources`` empty) until :func:`read_rec`.
    stamps: ``(name, size, mtime_ns)`` of every file it reads (the cache's key).
    """
    where: str
    sources: List[ImageSource] = field(default_factory=list)
    texts: List[str] = field(default_factory=list)
    stamps: List[Tuple[str, int, int]] = field(default_factory=list)
    kind: str = "folder"
    folders: List[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def own_classes(self) -> List[str]:
        """The classes this split names by itself: its class folders (sorted), or its distinct labels
        (:func:`map_labels`)."""
        return list(self.folders) if self.kind == "folder" else map_labels(self.texts, None, self.where)[0]

    def resolve(self, classes: List[str]) -> None:
        """Set ``labels``: each image's label text mapped onto ``classes`` (:func:`map_labels`); a folder split
        must have the same class folders as ``classes`` (by the same mapping)."""
        if self.kind == "folder":
            _same_classes(classes, self.folders, self.where)
        self.labels = map_labels(self.texts, classes, self.where)[1]


def stamp(path: str) -> Tuple[str, int, int]:
    """``(path, size, mtime_ns)`` of a file that must exist (a missing one is an error naming it)."""
    try:
        st = os.stat(path)
    except OSError:
        raise DataError(f"{path}: no such file") from None
    return path, int(st.st_size), int(st.st_mtime_ns)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: str) -> List[str]:
    found: List[str] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(top, f) for f in sorted(files) if _is_image(f)]
    return found


def _class_folders(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def _list_classes(folder: str) -> Split:
    """One folder of class sub-folders -> its :class:`Split` (label texts: the class folders' names)."""
    classes = _class_folders(folder)
    if not classes:
        loose = [f for f in os.listdir(folder) if _is_image(f)]
        if loose:
            raise DataError(f"{folder}: {len(loose)} images but no class sub-folders (folder: wants one "
                            f"sub-folder of images per class; a folder of images with a CSV of labels is csv:FILE)")
        raise DataError(f"{folder}: no images (expected one sub-folder per class holding {_EXTS} files)")
    split = Split(folder, folders=classes)
    for name in classes:
        files = _images_under(os.path.join(folder, name))
        if not files:
            raise DataError(f"{os.path.join(folder, name)}: empty class folder (no {_EXTS} images)")
        split.sources += files
        split.texts += [name] * len(files)
    split.stamps = [stamp(str(f)) for f in split.sources] + [(os.path.join(folder, c), 0, 0) for c in classes]
    return split


def _same_classes(classes: List[str], folders: List[str], where: str) -> None:
    """Refuse class folders that are not exactly ``classes`` (each mapped as :func:`map_labels` maps a label)."""
    extra = [f for f in folders if not _maps(f, classes)]
    kept = [f for f in folders if f not in extra]
    mapped = set(map_labels(kept, classes, where)[1].tolist()) if kept else set()
    missing = [c for k, c in enumerate(classes) if k not in mapped]
    if missing or extra:
        detail = "; ".join(part for part in (f"lacks {', '.join(missing[:5])}" if missing else "",
                                             f"has {', '.join(extra[:5])} besides" if extra else "") if part)
        raise DataError(f"{where}: its class folders differ from the training classes ({detail}): "
                        f"train and test must have the same classes")


def _maps(name: str, classes: List[str]) -> bool:
    try:
        map_labels([name], classes, name)
    except DataError:
        return False
    return True


def list_folder(path: str, test: bool = False) -> Dict[str, Split]:
    """``folder:PATH`` -> its splits (``train``; ``val``, ``test`` where present). test: a folder given as the
    test set (one split, ``test``, whatever it holds)."""
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such folder")
    present = [s for s in SPLITS if os.path.isdir(os.path.join(path, s))]
    if "train" not in present or test:
        return {"test" if test else "train": _list_classes(path)}
    return {name: _list_classes(os.path.join(path, name)) for name in present}


def _sniff(header: str) -> str:
    counts = {sep: header.count(sep) for sep in (";", "\t", ",")}
    return max(counts, key=lambda sep: counts[sep])


def _column(header: List[str], wanted: Optional[str], defaults: Sequence[str], what: str, param: str,
            path: str) -> int:
    names = [wanted] if wanted else list(defaults)
    lowered = [h.lower() for h in header]
    for name in names:
        if name in header:
            return header.index(name)
        if name.lower() in lowered:
            return lowered.index(name.lower())
    shown = repr(wanted) if wanted else "/".join(defaults[:3])
    raise DataError(f"{path}: no {what} column {shown} (its columns: {', '.join(header) or 'none'}); "
                    f"name it with {param}", params=(param,))


def list_csv(path: str, path_column: Optional[str] = None, label_column: Optional[str] = None) -> Split:
    """``csv:FILE`` -> its :class:`Split` (label texts as written; :meth:`Split.resolve` maps them)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV file ({str(err).splitlines()[0][:80]})") from None
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=_sniff(text.split("\n", 1)[0])) if any(r)]
    header = [h.strip() for h in rows[0]] if rows else []
    p = _column(header, path_column, PATH_COLUMNS, "image path", "csv_path_column", path)
    q = _column(header, label_column, LABEL_COLUMNS, "label", "csv_label_column", path)
    folder = os.path.dirname(os.path.abspath(path))
    split = Split(path, stamps=[stamp(path)], kind="csv")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= max(p, q):
            raise DataError(f"{path} row {line}: {len(row)} fields, the header has {len(header)}")
        split.sources.append(os.path.join(folder, row[p].strip()))
        split.texts.append(row[q].strip())
    if not split.sources:
        raise DataError(f"{path}: no images (a header but no rows)")
    split.stamps += [_stamp_listed(str(f)) for f in split.sources]
    return split


def _stamp_listed(file: str) -> Tuple[str, int, int]:
    try:
        st = os.stat(file)
    except OSError:
        return file, -1, 0  # missing: reported with the unreadable images
    return file, int(st.st_size), int(st.st_mtime_ns)


def _as_int(text: str) -> Optional[int]:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def map_labels(texts: Sequence[str], classes: Optional[List[str]], where: str) -> Tuple[List[str], np.ndarray]:
    """Label texts -> ``(classes, int32 label indices)``.

    classes ``None`` (a training set): its own sorted distinct labels (numerically where all are integers).
    Otherwise each label maps onto ``classes``: by name; an integer onto the class named by the same integer
    (``12`` onto ``00012``), else onto the class at that position. Anything else is an error naming ``where``.
    """
    ints = [_as_int(t) for t in texts]
    if classes is None:
        if all(v is not None for v in ints):
            distinct = sorted(set(v for v in ints if v is not None))
            classes, texts = [str(v) for v in distinct], [str(v) for v in ints]
        else:
            classes = sorted(set(texts))
    by_name = {c: k for k, c in enumerate(classes)}
    as_ints = [_as_int(c) for c in classes]
    by_int = ({v: k for k, v in enumerate(as_ints) if v is not None}
              if all(v is not None for v in as_ints) else {k: k for k in range(len(classes))})
    out = np.empty(len(texts), np.int32)
    for i, (text, value) in enumerate(zip(texts, ints)):
        k = by_name.get(text, by_int.get(value) if value is not None else None)
        if k is None:
            shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise DataError(f"{where}: label {text!r} (item {i + 1}) is outside the class list "
                            f"({len(classes)} classes: {shown})")
        out[i] = k
    return classes, out


def list_rec(path: str) -> Split:
    """``rec:FILE.rec`` -> an unread :class:`Split` (its files stamped); :func:`read_rec` reads it."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    idx = os.path.splitext(path)[0] + ".idx"
    if not os.path.isfile(idx):
        raise DataError(f"{path}: no index {os.path.basename(idx)} beside it (MXNet's im2rec writes the .rec and "
                        f"its .idx together; both are needed)")
    return Split(path, stamps=[stamp(path), stamp(idx)], kind="rec")


def read_rec(split: Split) -> List[bytes]:
    """Read every record of a :func:`list_rec` split: its sources (:class:`RecordRef`) and label texts are filled
    in; returns the records' image bytes."""
    import mxnet as mx

    idx = os.path.splitext(split.where)[0] + ".idx"
    try:
        reader = mx.recordio.MXIndexedRecordIO(idx, split.where, "r")
        payloads, texts = [], []
        for key in reader.keys:
            header, image = mx.recordio.unpack(reader.read_idx(key))
            label = np.asarray(header.label, np.float64).reshape(-1)
            texts.append(f"{label[0]:g}" if label.size else "")
            payloads.append(bytes(image))
        reader.close()
    except (mx.base.MXNetError, OSError, ValueError, KeyError) as err:
        raise DataError(f"{split.where}: not a readable RecordIO file with its index "
                        f"({str(err).splitlines()[0][:100]})") from None
    if not payloads:
        raise DataError(f"{split.where}: no records")
    split.texts = texts
    split.sources = [RecordRef(split.where, idx, int(k)) for k in reader.keys]
    return payloads
