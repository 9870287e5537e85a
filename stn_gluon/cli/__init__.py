"""The ``stn-gluon`` command line: ``train``, ``train-symbol``, ``launch``, ``evaluate``, ``visualize``,
``export-onnx``, ``predict``, ``serve``, ``models``, ``bench``, ``make-dataset``.

:mod:`.parser` builds the flags, :mod:`.commands` runs them. Every user mistake
(bad flag value, missing or damaged file, wrong shape) ends with a one-line
``error: ...`` on stderr and exit status 2; library errors name parameters
(``save_dir``) and are shown here with their flags (``--save-dir``).
"""
import importlib
import logging
import os
import sys
import traceback
from typing import Any, List, Optional, Sequence

from .._runtime.errors import StnGluonError, mxnet_message
from .._runtime.files import CHECKPOINT_NAME
from .._runtime.paths import os_error_message
from .threads import LoadSampler, command_of, prepare_threads

__all__ = ["main", "build_parser", "add_train_args", "train_config_from_args", "COMMANDS"]

#: Names of :mod:`.parser` and :mod:`.commands` offered here, loaded on first use (both import MXNet).
_LAZY = {"build_parser": ".parser", "add_train_args": ".parser", "train_config_from_args": ".parser",
         "COMMANDS": ".commands"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``stn-gluon`` with ``argv`` (default: the process's); the exit status.

    The OpenMP thread count is chosen first (:func:`.threads.prepare_threads`):
    MXNet reads it once, when it loads, and the parser and the commands import it.
    """
    sampler = _sampler()  # the first look at the load covers the parsing
    args_list: List[str] = list(sys.argv[1:] if argv is None else argv)
    prepare_threads(command_of(args_list), sampler=sampler)
    from .commands import COMMANDS  # lazy: imports MXNet, which reads OMP_NUM_THREADS once, as it loads
    from .parser import build_parser  # lazy: the same (the flags come from modules that import MXNet)
    import mxnet as mx

    from ..train.distributed import exit_if_distributed  # lazy: imports MXNet (see above)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(args_list)
    code = 2
    try:
        COMMANDS[args.command](args)
        return 0
    except StnGluonError as err:  # the library names parameters; here they are flags
        print(f"error: {err.for_cli()}", file=sys.stderr)
    except mx.base.MXNetError as err:
        print(f"error: MXNet: {mxnet_message(err)}", file=sys.stderr)
    except OSError as err:  # a safety net: the commands check their paths first
        print(f"error: {os_error_message(err)}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        code = 130
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        exit_if_distributed(1)  # a crashed worker must end, not wait for the others at exit
        raise
    exit_if_distributed(code)  # a failed worker of a distributed job ends now (see there)
    return code


def _resume_hint(args: Any) -> str:
    """After Ctrl-C: how to go on with an interrupted training, when it has a checkpoint to go on from."""
    if args.command not in ("train", "train-symbol"):
        return ""
    from .parser import train_config_from_args  # lazy: imports MXNet (main has loaded it by now)

    try:
        save_dir = train_config_from_args(args).save_dir
    except (StnGluonError, KeyboardInterrupt):
        return ""
    if not save_dir or not os.path.isfile(os.path.join(save_dir, CHECKPOINT_NAME)):
        return "; no epoch had finished: nothing was checkpointed"
    return f"; the last finished epoch is checkpointed (continue with --resume {save_dir})"


def _sampler() -> Optional[LoadSampler]:
    try:
        return LoadSampler()
    except OSError:  # no /proc/stat: prepare_threads gives a thread per core
        return None
