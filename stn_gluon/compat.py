"""Work-arounds for the pinned stack."""
import sys

__all__ = ["import_gluoncv"]

_MISSING = object()


def import_gluoncv():
    """Import gluoncv even where PyTorch >= 2 is installed.

    gluoncv 0.10 checks the PyTorch version at import time and raises
    ``RuntimeError`` for torch >= 2 (it only tolerates torch being absent),
    which would break training for anyone who also has PyTorch. We hide torch
    while gluoncv imports; its MXNet side, all we use, is unaffected.
    """
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    saved = sys.modules.get("torch", _MISSING)
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        import gluoncv
    finally:
        if saved is _MISSING:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = saved
    return gluoncv
