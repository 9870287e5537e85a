"""Pretrained models shipped inside the package: ``pretrained:NAME`` wherever a model is taken.

Each model is a folder here holding a run's export as ``stn-gluon train``
wrote it (``model-symbol.json``, ``model-0000.params``, ``model.json``), the
run's ``metrics.json`` (recipe, per-epoch history, test accuracy) and
``provenance.json`` (the exact command, the git commit it was trained from).
``manifest.json`` lists the models and the SHA-256 of every file; a model is
verified against it each time it is loaded, and a changed or damaged file is
refused with one line. Nothing here is a pickle.

``stn-gluon predict`` and ``stn-gluon serve`` use :data:`DEFAULT` when no
``--model`` is given; ``--model pretrained:NAME`` (any command that takes a
model) picks one; :func:`stn_gluon.get_model` ``(NAME, pretrained=True)``
gives the Gluon network with its weights. ``scripts/ship_pretrained.py``
puts a finished run here and updates the manifest.
"""
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..._runtime.errors import CheckpointError, StnGluonError
from ..._runtime.files import sha256_file

__all__ = ["PREFIX", "DEFAULT", "ROOT", "PretrainedModel", "list_pretrained", "get_pretrained", "is_pretrained_ref",
           "resolve_model_ref", "model_or_default", "default_model_note"]

#: How a model argument names a shipped model: ``pretrained:stn_lenet``.
PREFIX = "pretrained:"
#: The model ``predict`` and ``serve`` use without ``--model``: the default recipe's STN classifier on MNIST.
DEFAULT = "stn_lenet"
#: The folder holding the shipped models and ``manifest.json``.
ROOT = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PretrainedModel:
    """A shipped model: ``name``, ``summary`` (one line), ``folder`` (verified), ``metrics`` (its run's
    ``metrics.json``) and ``provenance`` (``command``, ``commit``, ...)."""

    name: str
    summary: str
    folder: str
    metrics: Dict[str, Any]
    provenance: Dict[str, Any]

    @property
    def ref(self) -> str:
        """``pretrained:NAME``, the ``--model`` value that picks it."""
        return PREFIX + self.name

    @property
    def test_accuracy(self) -> Optional[float]:
        value = self.metrics.get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) else None

    def describe(self) -> str:
        """``stn_lenet: <summary> (test accuracy 99.52 % on <data>)``."""
        acc = self.test_accuracy
        data = self.metrics.get("data_source") or self.metrics.get("config", {}).get("dataset", "")
        measured = f" (test accuracy {100 * acc:.2f} % on {data})" if acc is not None else ""
        return f"{self.name}: {self.summary}{measured}"


def _manifest(root: str) -> Dict[str, Any]:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: the pretrained models' manifest is unreadable ({err}); reinstall stn-gluon")
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise CheckpointError(f"{path}: the pretrained models' manifest has no models; reinstall stn-gluon")
    return models


def list_pretrained(root: Optional[str] = None) -> List[str]:
    """The names of the shipped models (``pretrained:NAME``)."""
    return sorted(_manifest(root or ROOT))


def _read_json(path: str) -> Dict[str, Any]:
    with open(path) as f:
        value = json.load(f)
    return value if isinstance(value, dict) else {}


def get_pretrained(name: str, root: Optional[str] = None) -> PretrainedModel:
    """The shipped model ``name``, its every file checked against the manifest's SHA-256.

    Raises :class:`~stn_gluon._runtime.errors.StnGluonError` for an unknown name and
    :class:`~stn_gluon._runtime.errors.CheckpointError` for a missing, changed or damaged file.
    """
    root = root or ROOT
    models = _manifest(root)
    if name not in models:
        raise StnGluonError(f"no pretrained model {name!r}; choose one of {', '.join(sorted(models))}")
    entry = models[name]
    folder = os.path.join(root, name)
    files = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(files, dict) or "model.json" not in files:
        raise CheckpointError(f"{os.path.join(root, MANIFEST)}: no checksums for {name}; reinstall stn-gluon")
    for file, digest in sorted(files.items()):
        path = os.path.join(folder, file)
        if not os.path.isfile(path):
            raise CheckpointError(f"pretrained model {name}: {path} is missing; reinstall stn-gluon")
        if sha256_file(path) != digest:
            raise CheckpointError(f"pretrained model {name}: {path} does not match its SHA-256 in the manifest "
                                  f"(changed or damaged); reinstall stn-gluon")
    metrics = _read_json(os.path.join(folder, "metrics.json")) if "metrics.json" in files else {}
    provenance = _read_json(os.path.join(folder, "provenance.json")) if "provenance.json" in files else {}
    return PretrainedModel(name, str(entry.get("summary", "")), folder, metrics, provenance)


def is_pretrained_ref(path: Any) -> bool:
    """Whether a model argument is ``pretrained:NAME``."""
    return isinstance(path, str) and path.startswith(PREFIX)


def resolve_model_ref(path: str, root: Optional[str] = None) -> str:
    """A model argument -> a path: ``pretrained:NAME`` becomes its verified folder, anything else is kept."""
    if not is_pretrained_ref(path):
        return path
    return get_pretrained(path[len(PREFIX):], root).folder


def model_or_default(model: Optional[str], note: Callable[[str], Any]) -> str:
    """``model``, or (for want of one) the ref of :data:`DEFAULT`, after passing :func:`default_model_note` to
    ``note`` (``predict`` and ``serve`` without ``--model``)."""
    if model:
        return model
    note(default_model_note())
    return PREFIX + DEFAULT


def default_model_note(root: Optional[str] = None) -> str:
    """The one line ``predict`` and ``serve`` print when they use :data:`DEFAULT` for want of ``--model``."""
    model = get_pretrained(DEFAULT, root)
    acc = model.test_accuracy
    accuracy = f", test accuracy {100 * acc:.2f} %" if acc is not None else ""
    return f"no --model given: using {model.ref} ({model.summary}{accuracy}); --model picks another " \
           f"(stn-gluon models lists them)"
