"""Work-arounds for the pinned stack.

This module imports nothing from ``stn_gluon`` or ``mxnet``: ``stn_gluon/__init__.py`` runs
:func:`prepare_mxnet_import` before anything else, so every way into the package (``import
stn_gluon``, ``stn-gluon``, ``python -m stn_gluon``, the workers the benchmarks start) gets it
before MXNet is first imported.
"""
import sys
import warnings
from types import ModuleType
from typing import Any, List, Optional

import numpy as np

__all__ = ["NUMPY_ALIASES", "prepare_mxnet_import", "restore_numpy_aliases", "ensure_distutils",
           "standalone_prelude", "import_gluoncv"]

#: The builtin aliases that numpy 1.24 removed and MXNet 1.9.1 still uses (``np.bool``, ...).
NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "complex": complex, "object": object, "str": str}

_MISSING = object()


def restore_numpy_aliases(numpy: Optional[ModuleType] = None) -> List[str]:
    """Put back each of :data:`NUMPY_ALIASES` that ``numpy`` (default: the installed one) lacks.

    numpy < 1.24 still has them (deprecated) and is left exactly as it is; on
    numpy 1.24-1.26 (Python 3.12 needs 1.26) ``import mxnet`` fails without
    them. They are the builtins numpy itself once exported under these names.
    Returns the names restored.
    """
    if numpy is None:
        numpy = np
    restored: List[str] = []
    for name, builtin in NUMPY_ALIASES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy < 1.24 warns when an alias is read
            missing = not hasattr(numpy, name)
        if missing:
            setattr(numpy, name, builtin)
            restored.append(name)
    return restored


def ensure_distutils() -> None:
    """Make ``import distutils.version`` work (MXNet 1.9.1 imports it); Python 3.12 has no distutils.

    setuptools ships a replacement, installed as ``distutils`` by the path
    hook it adds to site-packages; where that hook did not run (``python -S``,
    or setuptools installed after the interpreter started), importing
    setuptools installs it. Raises ``ImportError`` with what to install where
    neither is there.
    """
    try:
        import distutils.version  # noqa: F401  # lazy: the import is the check (Python 3.12 has no distutils)
        return
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import setuptools  # noqa: F401  # lazy: only where distutils is missing; it installs its own
        import distutils.version  # noqa: F401,F811  # lazy: setuptools' copy, put in sys.modules just above
    except ImportError as err:
        raise ImportError(f"Python {sys.version_info.major}.{sys.version_info.minor} has no distutils, which MXNet "
                          "1.9.1 imports: pip install setuptools (stn-gluon's install does)") from err


def prepare_mxnet_import() -> None:
    """Everything MXNet 1.9.1 needs from this Python and numpy before ``import mxnet``; safe to call twice.

    Runs first in ``import stn_gluon``. Where ``mxnet`` is imported before
    ``stn_gluon`` on numpy >= 1.24 it fails on ``np.bool``; import
    ``stn_gluon`` first (or run :func:`standalone_prelude`'s line).
    """
    restore_numpy_aliases()
    ensure_distutils()


def standalone_prelude() -> str:
    """One line of Python that runs :func:`prepare_mxnet_import` without importing ``stn_gluon``.

    For a child process that must import ``mxnet`` before ``stn_gluon``, as a
    user's own script does (``python -c PRELUDE + "; import mxnet; ..."``):
    importing ``stn_gluon._runtime.compat`` would run the package's thread set-up first.
    """
    return f"import runpy; runpy.run_path({__file__!r})['prepare_mxnet_import']()"


def import_gluoncv() -> Any:
    """Import gluoncv even where PyTorch >= 2 is installed.

    gluoncv 0.10 checks the PyTorch version at import time and raises
    ``RuntimeError`` for torch >= 2 (it only tolerates torch being absent),
    which would break training for anyone who also has PyTorch. We hide torch
    while gluoncv imports; its MXNet side, all we use, is unaffected.
    """
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    saved = sys.modules.get("torch", _MISSING)
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import gluoncv
    finally:
        if saved is _MISSING:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = saved  # type: ignore[assignment]
    return gluoncv
