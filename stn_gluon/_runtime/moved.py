"""The module paths of the flat layout that moved into the layered subpackages, kept importable for this release.

``import stn_gluon.training`` (and ``from stn_gluon.onnx import OnnxModel``) still work: a finder on
``sys.meta_path`` answers exactly the names of :data:`MOVED` (nothing else) with the module now at the new
path, after one :class:`DeprecationWarning` naming it. ``import stn_gluon`` installs the finder once.
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["MOVED", "install_finder", "lazy_reexport"]

#: Old module path -> new module path (the CHANGELOG lists the same table).
MOVED: Dict[str, str] = {
    "stn_gluon.compat": "stn_gluon._runtime.compat",
    "stn_gluon.errors": "stn_gluon._runtime.errors",
    "stn_gluon.paths": "stn_gluon._runtime.paths",
    "stn_gluon.context": "stn_gluon._runtime.devices",
    "stn_gluon.io": "stn_gluon._runtime.files",
    "stn_gluon.flags": "stn_gluon._runtime.flags",
    "stn_gluon.threads": "stn_gluon._runtime.threads",
    "stn_gluon.ops": "stn_gluon.nn.ops",
    "stn_gluon.blocks": "stn_gluon.nn.blocks",
    "stn_gluon.models": "stn_gluon.nn.models",
    "stn_gluon.explain": "stn_gluon.nn.explain",
    "stn_gluon.architecture": "stn_gluon.nn.architecture",
    "stn_gluon.zoo": "stn_gluon.nn.zoo",
    "stn_gluon.pretrained": "stn_gluon.nn.pretrained",
    "stn_gluon.download": "stn_gluon.data.download",
    "stn_gluon.distortions": "stn_gluon.data.distortions",
    "stn_gluon.onnx": "stn_gluon.export.onnx",
    "stn_gluon.onnx_ops": "stn_gluon.export.converters",
    "stn_gluon.onnx_runtimes": "stn_gluon.export.runtimes",
    "stn_gluon.quantize": "stn_gluon.export.int8",
    "stn_gluon.recipes": "stn_gluon.train.recipes",
    "stn_gluon.schedule": "stn_gluon.train.schedule",
    "stn_gluon.distributed": "stn_gluon.train.distributed",
    "stn_gluon.training": "stn_gluon.train.gluon",
    "stn_gluon.symbol.train": "stn_gluon.train.module",
    "stn_gluon.optstate": "stn_gluon.train.optstate",
    "stn_gluon.runs": "stn_gluon.train.runs",
    "stn_gluon.reporting": "stn_gluon.train.reporting",
    "stn_gluon.visualize": "stn_gluon.train.plots",
    "stn_gluon.inference": "stn_gluon.serve.predictors",
    "stn_gluon.inputs": "stn_gluon.serve.inputs",
    "stn_gluon.payloads": "stn_gluon.serve.payloads",
    "stn_gluon.batching": "stn_gluon.serve.batching",
    "stn_gluon.serving": "stn_gluon.serve.app",
    "stn_gluon.metrics": "stn_gluon.serve.metrics",
    "stn_gluon.distortion_bench": "stn_gluon.bench.distortions",
}
# `stn_gluon.data` and `stn_gluon.export` are packages now; each re-exports the names of the module it was
# (stn_gluon.data.mnist, stn_gluon.export.saved), so they need no entry here.


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds only the old names of :data:`MOVED`; loading one puts the new module under the old name."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder: exec_module puts the real module in its place

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


_FINDER = _MovedFinder()


def install_finder() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once): it is asked only for names no other finder has."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def lazy_reexport(package: str, module: str, names: Sequence[str]) -> Tuple[Callable[[str], Any],
                                                                          Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for a package that offers ``names`` of its submodule ``module`` (``".mnist"``)
    as the one module it used to be, importing that submodule on first use (PEP 562)."""
    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(module, package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
