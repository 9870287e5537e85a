"""The ``stn-gluon`` command line: ``train``, ``train-symbol``, ``evaluate``, ``visualize``,
``export-onnx``, ``predict``, ``serve``, ``bench``.

:mod:`.parser` builds the flags, :mod:`.commands` runs them. Every user mistake
(bad flag value, missing or damaged file, wrong shape) ends with a one-line
``error: ...`` on stderr and exit status 2; library errors name parameters
(``save_dir``) and are shown here with their flags (``--save-dir``).
"""
import logging
import sys

from .commands import COMMANDS
from .parser import add_train_args, build_parser, train_config_from_args

__all__ = ["main", "build_parser", "add_train_args", "train_config_from_args", "COMMANDS"]


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    import mxnet as mx

    from ..errors import StnGluonError, mxnet_message

    try:
        COMMANDS[args.command](args)
    except StnGluonError as err:  # the library names parameters; here they are flags
        print(f"error: {err.for_cli()}", file=sys.stderr)
        return 2
    except mx.base.MXNetError as err:
        print(f"error: MXNet: {mxnet_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a safety net: the commands check their paths first
        from ..paths import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ("; the last finished epoch is checkpointed (continue with --resume)"
                if args.command in ("train", "train-symbol") else "")
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    return 0
