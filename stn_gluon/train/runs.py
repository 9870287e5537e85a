"""Run folders: what a training run left in a save dir, and never replacing it unasked.

A save dir holds a run when it has any file this package writes there
(:data:`RUN_FILES`, :data:`RUN_FILE_PATTERNS`). Training into it is refused
with one line saying what is there, unless the run is continued (``resume``)
or replaced (``overwrite``, which touches this package's files only; anything
else in the folder stays). Overwriting first moves the old run's files aside, into a hidden folder
``.overwritten-XXXX`` of the save dir (:func:`set_aside`), and deletes them only once the new run has
written its first checkpoint: a run that fails before that leaves the old one there, and says where. After a run is exported, a ``model.onnx`` beside it
that was exported from other weights is removed, so no stale export survives
a retraining.
"""
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

from .._runtime.errors import StnGluonError
from .._runtime.files import CHECKPOINT_NAME
from .._runtime.paths import writable_dir
from ..export.int8 import int8_path
from ..export.saved import onnx_weights_mismatch

if TYPE_CHECKING:  # recipes imports nothing from here; typing only all the same
    from .recipes import TrainConfig

__all__ = ["RunExistsError", "RunInfo", "RUN_FILES", "RUN_FILE_PATTERNS", "inspect_run", "describe_run",
           "check_save_dir", "prepare_save_dir", "clear_run", "set_aside", "SetAside", "ASIDE_PREFIX", "drop_stale_derived", "plan_demo", "DemoPlan"]

log = logging.getLogger(__name__)

#: Files a training run (or ``export-onnx`` / ``visualize`` on it) writes into its save dir.
RUN_FILES = (CHECKPOINT_NAME, "model-symbol.json", "model.json", "model.onnx", "metrics.json", "history.csv",
             "curves.png", "stn_grid.png", "train_state.json")
#: The numbered ones: Module checkpoints and their optimizer state (``.states``: the old, pickled form).
RUN_FILE_PATTERNS = (r"model-\d{4}\.params", r"model-\d{4}\.states", r"model-\d{4}\.optimizer(\.json)?")
_TEMP = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")  # io.atomic_path's temporary names
#: The hidden folder of a save dir where ``overwrite`` keeps the previous run until the new one has a checkpoint.
ASIDE_PREFIX = ".overwritten-"


class RunExistsError(StnGluonError):
    """The save dir already holds a run, and neither resuming nor overwriting was asked for."""


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or any(re.fullmatch(p, name) for p in RUN_FILE_PATTERNS)


@dataclass
class RunInfo:
    """What :func:`inspect_run` found in a save dir."""
    folder: str
    files: list = field(default_factory=list)
    epochs_done: Optional[int] = None
    epochs_total: Optional[float] = None  # fractional for a run of e.g. 1.25 epochs
    test_accuracy: Optional[float] = None
    finished: bool = False
    recipe: Optional[dict] = None


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _checkpoint_meta(path: str) -> Optional[Dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as zf:
            value = json.loads(zf.read("meta.json"))
        return value if isinstance(value, dict) else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None


def inspect_run(folder: str) -> Optional[RunInfo]:
    """The run in ``folder`` (``None`` if it holds none: missing, empty, or only other files)."""
    if not os.path.isdir(folder):
        return None
    files = sorted(f for f in os.listdir(folder) if _is_run_file(f))
    if not files:
        return None
    info = RunInfo(folder, files)
    state = (_checkpoint_meta(os.path.join(folder, CHECKPOINT_NAME))
             or _read_json(os.path.join(folder, "train_state.json")) or {})
    metrics = _read_json(os.path.join(folder, "metrics.json")) or {}
    info.recipe = state.get("recipe") if isinstance(state.get("recipe"), dict) else None
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    if info.recipe is None and config:
        info.recipe = config
    done = state.get("epoch", metrics.get("epochs"))
    info.epochs_done = done if isinstance(done, int) else None
    total = (info.recipe or {}).get("epochs")
    info.epochs_total = total if isinstance(total, (int, float)) and not isinstance(total, bool) else None
    info.finished = bool(metrics)
    accuracy = metrics.get("test_accuracy")
    history = state.get("history")
    if accuracy is None and isinstance(history, list) and history and isinstance(history[-1], dict):
        accuracy = history[-1].get("test_acc")
    info.test_accuracy = float(accuracy) if isinstance(accuracy, (int, float)) else None
    return info


def describe_run(info: RunInfo) -> str:
    """``a finished run (6/6 epochs, test accuracy 98.30 %)``, ``a partial run (2 of 6 epochs done)``..."""
    details = []
    if info.epochs_done is not None:
        total = info.epochs_total
        if info.finished:  # a fractional run's last epoch is partial: say how many epochs it was
            details.append(f"{info.epochs_done}/{total:g} epochs" if total is not None and float(total).is_integer()
                           else f"{total:g} epochs" if total is not None else f"{info.epochs_done} epochs")
        else:
            details.append(f"{info.epochs_done}{f' of {total:g}' if total else ''} epochs done")
    if info.test_accuracy is not None:
        details.append(f"test accuracy {100 * info.test_accuracy:.2f} %")
    if not details:
        details.append(", ".join(info.files[:4]) + (", ..." if len(info.files) > 4 else ""))
    kind = "a finished run" if info.finished else ("a partial run" if info.epochs_done is not None
                                                    else "files of a run")
    return f"{kind} ({', '.join(details)})"


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def _save_dir(cfg: "TrainConfig") -> str:
    folder = cfg.resolved().save_dir
    assert folder is not None
    return folder


def check_save_dir(cfg: "TrainConfig") -> Optional[RunInfo]:
    """Refuse to train into ``cfg.save_dir`` if that would replace a run nobody asked to replace.

    Allowed: a missing or empty folder, one with only other files, resuming
    (``cfg.resume``) the run in it, or ``cfg.overwrite``. Returns the run found
    (or ``None``); raises :class:`RunExistsError` with the one line to show.
    """
    folder = _save_dir(cfg)
    overwrite = cfg.overwrite
    if overwrite and cfg.resume:
        raise StnGluonError("overwrite replaces the run that resume would continue: give one of them",
                            params=("overwrite", "resume"))
    info = inspect_run(folder)
    if info is None or overwrite:
        return info
    if cfg.resume and (cfg.resume == "auto" or _inside(cfg.resume, folder)):
        return info
    raise RunExistsError(f"{folder} already holds {describe_run(info)}; continue it with resume, "
                         f"replace it with overwrite, or choose another save_dir",
                         params=("resume", "overwrite", "save_dir"))


def _run_entries(folder: str) -> List[str]:
    """The names in ``folder`` that this package wrote there: run files, their temporary names, export folders."""
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        temp = _TEMP.fullmatch(name)
        if os.path.isfile(path) and (_is_run_file(name) or (temp and _is_run_file(temp.group("name")))):
            found.append(name)
        elif os.path.isdir(path) and name.startswith(".export-"):  # export_block's temporary folder
            found.append(name)
    return found


def clear_run(folder: str) -> list:
    """Remove the files this package writes in a run folder (nothing else); returns their names."""
    removed = _run_entries(folder)
    for name in removed:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    return removed


class SetAside:
    """The previous run's files, moved aside by ``overwrite`` (``folder``; ``None``: nothing was set aside).

    :meth:`discard` deletes them (call it once the new run has written a checkpoint). Used as a context
    manager around the training: leaving it on an error (a crash, Ctrl-C) with the files still set aside
    logs one line saying where they are; leaving it normally discards them.
    """

    def __init__(self, folder: Optional[str] = None, previous: str = "") -> None:
        self.folder = folder
        self.previous = previous  # what the old run was, in words

    def discard(self) -> None:
        """Delete the set-aside files (once: later calls do nothing)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            log.info("overwrite: deleted the previous run (%s), the new one has its first checkpoint", self.folder)
            self.folder = None

    def __enter__(self) -> "SetAside":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        if self.folder is None:
            return
        if kind is None:
            self.discard()
            return
        log.error("overwrite: the previous run (%s) was kept in %s: move its files back to restore it",
                  self.previous, self.folder)


def set_aside(folder: str) -> SetAside:
    """Move the run in ``folder`` (this package's files only) into a new hidden folder of ``folder``."""
    info = inspect_run(folder)
    if info is None:
        return SetAside()
    aside = SetAside(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=folder), describe_run(info))
    try:
        for name in _run_entries(folder):
            os.replace(os.path.join(folder, name), os.path.join(aside.folder or "", name))
    except BaseException as err:  # some files moved, some not: say where the moved ones are
        aside.__exit__(type(err), err, err.__traceback__)
        raise
    return aside


def prepare_save_dir(cfg: "TrainConfig") -> SetAside:
    """Create ``cfg.save_dir`` (and its parents); with ``cfg.overwrite``, first move the old run's files aside
    (:func:`set_aside`); the files set aside, to discard once the new run has a checkpoint."""
    folder = _save_dir(cfg)
    writable_dir(folder, "save_dir", create=True)
    if not (cfg.overwrite and inspect_run(folder) is not None):
        return SetAside()
    previous = set_aside(folder)
    try:
        log.warning("overwrite: moved the previous run in %s aside to %s; it is deleted once the new run has "
                    "written its first checkpoint", folder, previous.folder)
    except BaseException as err:  # Ctrl-C right here: still say where the old run is
        previous.__exit__(type(err), err, err.__traceback__)
        raise
    return previous


def _stale_why(path: str, folder: str) -> Optional[str]:
    try:
        return "it was exported from the previous weights" if onnx_weights_mismatch(path, folder) else None
    except StnGluonError as err:  # unreadable, or metadata pointing elsewhere: not an export of these weights
        return f"it is no export of these weights ({err})"


def drop_stale_derived(folder: str) -> list:
    """After a (re)export into ``folder``: remove its ``model.onnx`` and int8 copy where made from other weights
    (or where they cannot say: unreadable, or metadata that points outside the folder)."""
    fp32 = os.path.join(folder, "model.onnx")
    removed = []
    for path in (fp32, int8_path(fp32)):
        why = _stale_why(path, folder) if os.path.isfile(path) else None
        if why:
            os.remove(path)
            log.warning("Removed %s: %s (run stn-gluon export-onnx again for the new ones)", path, why)
            removed.append(path)
    return removed


@dataclass
class DemoPlan:
    """What ``make demo`` does: train into ``save_dir`` (fresh or ``resume``), or nothing (``done``)."""
    save_dir: str
    resume: bool = False
    done: bool = False
    message: str = ""


def plan_demo(cfg: "TrainConfig", base: str = "runs/demo") -> DemoPlan:
    """Where a repeated ``make demo`` goes, so a second run never destroys the first.

    The first of ``base``, ``base-2``, ``base-3``... that is free or holds a run
    of the same recipe: a finished one is left as it is (``done``), a partial
    one is resumed; any other folder holding a run of another recipe is kept
    and skipped.
    """
    n = 1
    while True:
        folder = base if n == 1 else f"{base}-{n}"
        if os.path.exists(folder) and not os.path.isdir(folder):
            n += 1
            continue
        info = inspect_run(folder)
        if info is None:
            note = "" if n == 1 else f" ({base} holds a run of another recipe, kept)"
            return DemoPlan(folder, message=f"Training into {folder}{note}")
        if info.recipe is not None and not cfg.recipe_differences(info.recipe):
            if info.finished:
                return DemoPlan(folder, done=True, message=(
                    f"{folder} already holds this demo, {describe_run(info)}; leaving it as it is "
                    f"(stn-gluon train --save-dir {folder} --overwrite to train it again)"))
            if CHECKPOINT_NAME in info.files:
                return DemoPlan(folder, resume=True, message=f"Continuing the unfinished demo in {folder}")
        n += 1
