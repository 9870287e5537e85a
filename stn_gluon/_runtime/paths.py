"""Checks of the paths a user names, made before any work starts.

Each function raises :class:`~stn_gluon._runtime.errors.StnGluonError` with one line
that names the argument (``what``, e.g. ``"--save-dir"``) and the path, for a
file where a folder is wanted or the reverse, a missing parent folder, or a
place nothing can be written. Writability is probed by creating (and at once
removing) an empty temporary file in the target folder: permission bits say
nothing for root or for read-only and virtual file systems such as ``/proc``.
"""
import os
import tempfile
from typing import Callable, List, Optional

from .errors import StnGluonError

__all__ = ["writable_file", "writable_dir", "readable_path", "remove_empty_dirs", "os_error_message"]


def _nearest_existing(path: str) -> str:
    """The longest existing prefix of ``path``, spelled as the user did (``"."`` for the current folder)."""
    current = os.path.normpath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current) or "."
        if parent == current:
            break
        current = parent
    return current


def _probe(folder: str, what: str, path: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".stn-gluon-probe-", dir=folder)
    except OSError as err:
        reason = "it takes no new files" if isinstance(err, FileNotFoundError) else (err.strerror or str(err))
        raise _fail(what, f"{what} {path}: cannot write in {folder} ({reason})") from None
    os.close(fd)
    os.remove(tmp)


def _no_file_on_the_way(folder: str, what: str, path: str) -> str:
    """Raise if a file stands where ``folder`` (for ``path``) must be; returns its longest existing prefix."""
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise _fail(what, f"{what} {path}: {existing} is a file, not a folder")
    return existing


def _fail(what: str, message: str) -> StnGluonError:
    """The error for argument ``what``: a parameter name (``save_dir``) is shown as a flag by the CLI."""
    return StnGluonError(message, params=(what,) if what.isidentifier() else ())


def writable_file(path: str, what: str, suffix: Optional[str] = None) -> str:
    """Check that the file ``path`` can be written (created or replaced); returns ``path``.

    Its folder must exist already (a file output never creates folders) and
    take new files; ``path`` must not be a folder; with ``suffix`` (e.g.
    ``".onnx"``), the name must end with it, so that a slip such as
    ``-o README.md`` cannot replace an unrelated file.
    """
    if not path:
        raise _fail(what, f"{what}: expected a file name, got an empty one")
    if suffix and not path.lower().endswith(suffix):
        raise _fail(what, f"{what} {path}: expected a {suffix} file name")
    if os.path.isdir(path):
        raise _fail(what, f"{what} {path}: is a folder, not a file")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise _fail(what, f"{what} {path}: exists and is not a regular file")
    folder = os.path.dirname(os.path.normpath(path)) or "."
    _no_file_on_the_way(folder, what, path)
    if not os.path.isdir(folder):
        raise _fail(what, f"{what} {path}: the folder {folder} does not exist (create it first)")
    _probe(folder, what, path)
    return path


def writable_dir(path: str, what: str, create: bool = False,
                 note: Optional[Callable[[str], None]] = None) -> List[str]:
    """Check that ``path`` is, or can become, a folder that takes new files.

    A missing folder (and its missing parents) is created when ``create`` is
    true, with one ``note`` line (default: none) saying so; otherwise it is
    only checked that it could be. Returns the folders created, outermost
    first, for :func:`remove_empty_dirs` to take back if the work fails.
    """
    if not path:
        raise _fail(what, f"{what}: expected a folder name, got an empty one")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise _fail(what, f"{what} {path}: is a file, not a folder")
    existing = _no_file_on_the_way(path, what, path)
    _probe(existing, what, path)
    if os.path.isdir(path) or not create:
        return []
    missing, current = [], os.path.normpath(path)
    while current != existing:
        missing.append(current)
        current = os.path.dirname(current) or "."
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise _fail(what, f"{what} {path}: cannot create it ({err.strerror or err})") from None
    if note is not None:
        note(f"{what}: created the folder {path}")
    return missing[::-1]


def readable_path(path: str, what: str, kind: str = "any") -> str:
    """Check that ``path`` exists and can be read; ``kind``: ``"file"``, ``"dir"`` or ``"any"``. Returns ``path``."""
    if not path:
        raise _fail(what, f"{what}: expected a path, got an empty one")
    if not os.path.exists(path):
        existing = _nearest_existing(path)
        if not os.path.isdir(existing):
            raise _fail(what, f"{what} {path}: not found ({existing} is a file, not a folder)")
        raise _fail(what, f"{what} {path}: not found")
    if kind == "file" and os.path.isdir(path):
        raise _fail(what, f"{what} {path}: is a folder, not a file")
    if kind == "dir" and not os.path.isdir(path):
        raise _fail(what, f"{what} {path}: is a file, not a folder")
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        raise _fail(what, f"{what} {path}: permission denied")
    return path


def remove_empty_dirs(folders: List[str]) -> None:
    """Remove the folders (as returned by :func:`writable_dir`) that are still empty, innermost first."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def os_error_message(err: OSError) -> str:
    """One line for an ``OSError`` that escaped a command, naming the user's file.

    A temporary name of the atomic writer (``.<name>.XXXX.tmp``) is reported as
    the file it stood for.
    """
    name = err.filename
    reason = err.strerror or str(err) or type(err).__name__
    if name is None:
        return reason
    name = os.fsdecode(name)
    base = os.path.basename(name)
    if base.startswith(".") and base.endswith(".tmp") and base.count(".") >= 3:
        return f"cannot write {os.path.join(os.path.dirname(name), base[1:].rsplit('.', 2)[0])}: {reason}"
    return f"{name}: {reason}"
