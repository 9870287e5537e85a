"""Atomic file writes and training checkpoints.

Every file this package writes goes to a temporary name in the target folder
first and is then renamed over the target, so a process killed at any moment
leaves either the old file or the new one, never a torn one.
"""
import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
import zlib

from .errors import CheckpointError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "write_json", "sha256_file",
           "save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.zip"
_CHECKPOINT_FORMAT = 1


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path):
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path, meta, params_writer, states_writer=None):
    """Write one checkpoint file atomically.

    meta: JSON-able dict (epoch, history, configuration...).
    params_writer(filename): writes the network parameters (e.g. ``net.save_parameters``).
    states_writer(filename): writes the optimizer states (e.g. ``trainer.save_states``).
    The checkpoint is a zip of ``meta.json``, ``net.params`` and ``trainer.states``.
    """
    with tempfile.TemporaryDirectory() as tmpdir:
        params = os.path.join(tmpdir, "net.params")
        params_writer(params)
        states = None
        if states_writer is not None:
            states = os.path.join(tmpdir, "trainer.states")
            states_writer(states)
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("meta.json", json.dumps(dict(meta, format=_CHECKPOINT_FORMAT)))
                zf.write(params, "net.params")
                if states:
                    zf.write(states, "trainer.states")


@contextlib.contextmanager
def load_checkpoint(path):
    """Open a checkpoint written by :func:`save_checkpoint`.

    Yields ``(meta, params_file, states_file_or_None)``, files valid inside the
    ``with`` block. A missing, truncated or corrupt checkpoint raises
    :class:`CheckpointError`; nothing is loaded from it.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    with tempfile.TemporaryDirectory() as tmpdir:
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise CheckpointError(f"checkpoint {path} is damaged ({bad} fails its CRC check)")
                names = set(zf.namelist())
                if not {"meta.json", "net.params"} <= names:
                    raise CheckpointError(f"checkpoint {path} is incomplete (has {sorted(names)})")
                meta = json.loads(zf.read("meta.json"))
                zf.extractall(tmpdir, members=[n for n in ("net.params", "trainer.states") if n in names])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error) as err:
            raise CheckpointError(f"checkpoint {path} is damaged ({err}); delete it or train "
                                  f"without --resume") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int):
            raise CheckpointError(f"checkpoint {path} has no valid meta.json")
        states = os.path.join(tmpdir, "trainer.states")
        yield meta, os.path.join(tmpdir, "net.params"), states if os.path.exists(states) else None
