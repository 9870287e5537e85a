"""Atomic file writes and training checkpoints.

Every file this package writes goes to a temporary name in the target folder
first and is then renamed over the target, so a process killed at any moment
leaves either the old file or the new one, never a torn one.
"""
import contextlib
import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from .errors import CheckpointError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "write_json", "sha256_file",
           "save_checkpoint", "load_checkpoint", "not_a_checkpoint", "current_umask", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.zip"
_RETRAIN = ("overwrite", "save_dir")  # the parameters a "train again" message names
#: 2: optimizer state as ``optimizer.params`` (an ``mx.nd.save`` dict) + ``optimizer.json``;
#: 1 held ``trainer.states``, a pickle, and is refused.
_CHECKPOINT_FORMAT = 2
#: Names in a format-1 checkpoint that are pickles: never opened.
PICKLED_MEMBERS = ("trainer.states",)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    The file ends up with the mode a plain ``open(path, "w")`` would give it
    (0644 under umask 022), not ``mkstemp``'s private 0600.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: str, meta: Dict[str, Any], params_writer: Callable[[str], Any],
                    optimizer_state: Optional[Tuple[Any, Any]] = None) -> None:
    """Write one checkpoint file atomically.

    meta: JSON-able dict (epoch, history, configuration...).
    params_writer(filename): writes the network parameters (e.g. ``net.save_parameters``).
    optimizer_state: ``(arrays, info)`` from :func:`stn_gluon.train.optstate.updater_state`, or None.
    The checkpoint is a zip of ``meta.json``, ``net.params`` and, with an optimizer
    state, ``optimizer.params`` (``mx.nd.save``) and ``optimizer.json``: arrays and
    JSON only, nothing that loads through pickle.
    """
    import mxnet as mx

    with tempfile.TemporaryDirectory() as tmpdir:
        params = os.path.join(tmpdir, "net.params")
        params_writer(params)
        if optimizer_state is not None:
            mx.nd.save(os.path.join(tmpdir, "optimizer.params"), optimizer_state[0])
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("meta.json", json.dumps(dict(meta, format=_CHECKPOINT_FORMAT)))
                zf.write(params, "net.params")
                if optimizer_state is not None:
                    zf.write(os.path.join(tmpdir, "optimizer.params"), "optimizer.params")
                    zf.writestr("optimizer.json", json.dumps(optimizer_state[1]))


#: Files of an exported model or a run's reports: what ``--resume`` may be pointed at by mistake.
_NOT_CHECKPOINTS = ((r"-\d{4}\.params$", "the exported model's weights"),
                    (r"-symbol\.json$", "the exported model's graph"),
                    (r"\.onnx$", "an ONNX export"),
                    (r"(^|/)(model|metrics)\.json$", "a run's description"),
                    (r"\.(png|csv)$", "a run's report"))


def not_a_checkpoint(path: str) -> Optional[str]:
    """What ``path`` is if it is a file a run writes but not a checkpoint (else ``None``)."""
    name = os.path.basename(path)
    for pattern, what in _NOT_CHECKPOINTS:
        if re.search(pattern, name):
            return what
    return None


@contextlib.contextmanager
def load_checkpoint(path: str) -> Iterator[Tuple[Dict[str, Any], str, Optional[Tuple[Any, Dict[str, Any]]]]]:
    """Open a checkpoint written by :func:`save_checkpoint`.

    Yields ``(meta, params_file, optimizer_state_or_None)``, the file valid inside
    the ``with`` block; ``optimizer_state`` is ``(arrays, info)`` for
    :func:`stn_gluon.train.optstate.restore_updater_state`. A missing, truncated or
    corrupt checkpoint, or one from before format 2 (whose optimizer state is a
    pickle), raises :class:`CheckpointError`; nothing is loaded from it and
    no pickle is ever opened.
    """
    import mxnet as mx

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    what = not_a_checkpoint(path)
    if what is not None:
        raise CheckpointError(f"{path} is {what}, not a checkpoint (the file is fine); resume expects the "
                              f"run folder or its {CHECKPOINT_NAME}", params=("resume",))
    damaged = "it cannot be resumed; train again with overwrite or into another save_dir"  # names _RETRAIN
    with tempfile.TemporaryDirectory() as tmpdir:
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                pickled = sorted(names & set(PICKLED_MEMBERS))
                if pickled:
                    raise CheckpointError(
                        f"checkpoint {path} is from an older stn-gluon: its optimizer state ({pickled[0]}) is a "
                        f"pickle, which is never loaded (it could run code); {damaged}", params=_RETRAIN)
                bad = zf.testzip()
                if bad is not None:
                    raise CheckpointError(f"checkpoint {path} is damaged ({bad} fails its CRC check); {damaged}",
                                          params=_RETRAIN)
                if not {"meta.json", "net.params"} <= names:
                    raise CheckpointError(f"checkpoint {path} is incomplete (has {sorted(names)})")
                meta = json.loads(zf.read("meta.json"))
                info = json.loads(zf.read("optimizer.json")) if "optimizer.json" in names else None
                zf.extractall(tmpdir, members=[n for n in ("net.params", "optimizer.params") if n in names])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error) as err:
            raise CheckpointError(f"checkpoint {path} is damaged ({err}); {damaged}", params=_RETRAIN) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int):
            raise CheckpointError(f"checkpoint {path} has no valid meta.json")
        state = None
        if info is not None:
            try:
                arrays = mx.nd.load(os.path.join(tmpdir, "optimizer.params"))
            except mx.base.MXNetError:
                raise CheckpointError(f"checkpoint {path}: its optimizer.params is unreadable; {damaged}",
                                      params=_RETRAIN) from None
            if not isinstance(arrays, dict) or not isinstance(info, dict):
                raise CheckpointError(f"checkpoint {path}: its optimizer state is malformed; {damaged}",
                                      params=_RETRAIN)
            state = (arrays, info)
        yield meta, os.path.join(tmpdir, "net.params"), state
