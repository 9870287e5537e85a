"""The ``stn-gluon`` command line: ``train``, ``train-symbol``, ``launch``, ``evaluate``, ``visualize``,
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

    from .._runtime.errors import StnGluonError, mxnet_message

    from ..train.distributed import exit_if_distributed

    code = 2
    try:
        COMMANDS[args.command](args)
        return 0
    except StnGluonError as err:  # the library names parameters; here they are flags
        print(f"error: {err.for_cli()}", file=sys.stderr)
    except mx.base.MXNetError as err:
        print(f"error: MXNet: {mxnet_message(err)}", file=sys.stderr)
    except OSError as err:  # a safety net: the commands check their paths first
        from .._runtime.paths import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
    except KeyboardInterrupt:
        hint = ("; the last finished epoch is checkpointed (continue with --resume)"
                if args.command in ("train", "train-symbol") else "")
        print(f"interrupted{hint}", file=sys.stderr)
        code = 130
    except SystemExit:
        raise
    except BaseException:
        import traceback

        traceback.print_exc()
        exit_if_distributed(1)  # a crashed worker must end, not wait for the others at exit
        raise
    exit_if_distributed(code)  # a failed worker of a distributed job ends now (see there)
    return code
