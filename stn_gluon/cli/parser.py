"""The ``stn-gluon`` argument parser: every subcommand's flags.

The training flags come from :class:`~stn_gluon.train.recipes.TrainConfig`, the
server's from :class:`~stn_gluon.serve.app.ServeConfig`, the distortion
benchmark's from :class:`~stn_gluon.bench.distortions.DistortionBenchConfig`
(:func:`stn_gluon._runtime.flags.add_flags`): a knob is declared once, where it is used.
"""
import argparse
import os
from typing import Any, NoReturn, Sequence, Tuple

from .. import __version__
from .._runtime.errors import StnGluonError
from .._runtime.flags import add_flags, finite_float, positive_int, values_from_args
from ..bench.distortions import DistortionBenchConfig
from ..bench.int8 import Int8BenchConfig
from ..bench.loader import LoaderBenchConfig
from ..data.signs import SignsConfig
from ..data.sources import SPEC_HELP
from ..export.converters import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, check_opset, parse_input_spec
from ..export.int8 import QuantizeConfig
from ..nn.pretrained import DEFAULT as PRETRAINED_DEFAULT, PREFIX as PRETRAINED_PREFIX
from ..serve.app import ServeConfig
from ..serve.inputs import PIXEL_RANGES
from ..train.recipes import TrainConfig, dataset_value, recipe_notes

__all__ = ["build_parser", "add_train_args", "add_data_args", "train_config_from_args", "MAX_VISUALIZE_COUNT",
           "TIME_TO_ACCURACY_FLAGS"]


MAX_VISUALIZE_COUNT = 128  # 16 rows of 8: more draws digits too small to read
#: ``--model`` of predict and serve, which work without it.
MODEL_HELP = (".onnx file, save dir, export prefix, or pretrained:NAME (a model shipped with the package: "
              f"stn-gluon models lists them); default: {PRETRAINED_PREFIX}{PRETRAINED_DEFAULT}, the MNIST classifier")


def _count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_VISUALIZE_COUNT:
        raise argparse.ArgumentTypeError(f"at most {MAX_VISUALIZE_COUNT} images fit one readable plot, "
                                         f"got {value}")
    return value


def _opset(text: str) -> int:
    try:
        return check_opset(text)
    except StnGluonError as err:
        raise argparse.ArgumentTypeError(str(err).replace("ONNX opset must", "must")) from None


def _input_spec(text: str) -> Tuple[str, Tuple[int, ...]]:
    try:
        return parse_input_spec(text)
    except StnGluonError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_data_args(p: argparse.ArgumentParser, dataset_default: Any = "mnist") -> None:
    p.add_argument("--data-dir", help="folder with the four MNIST IDX files (.gz or raw); "
                   "default: $STN_GLUON_DATA, then ~/.mxnet/datasets/mnist, then the embedded sample")
    p.add_argument("--download", action="store_true",
                   help="if no MNIST files are found, fetch them with Gluon's downloader "
                        "(off by default: nothing uses the network unless asked)")
    p.add_argument("--ctx", default="cpu", help="cpu, cpu:0,1, gpu:0 or gpu:0,1 (several = data-parallel)")
    p.add_argument("--dataset", type=dataset_value, default=dataset_default, metavar="DATASET",
                   help=f"the data: {SPEC_HELP} (distorted sets are generated from MNIST once and cached; "
                        f"another dataset from disk: a folder, its test/ split)"
                        + ("" if dataset_default else "; default: the model's own"))


def add_train_args(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """The training flags of ``train`` and ``train-symbol``: one per :class:`~stn_gluon.train.recipes.TrainConfig`
    field, with its help, default and the other recipes' values."""
    add_flags(p, TrainConfig, skip=skip, default_notes=recipe_notes)
    p.add_argument("--no-stn", action="store_true", help="train the same network without the STN (the baseline)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``stn-gluon train: error: ...``), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: The training flags `bench time-to-accuracy` takes (the rest of the run is the recipe's).
TIME_TO_ACCURACY_FLAGS = ("recipe", "epochs", "batch_size", "lr", "data_dir")


def build_parser() -> argparse.ArgumentParser:
    """The ``stn-gluon`` parser: one subparser per command, in the order ``--help`` lists them."""
    parser = _Parser(prog="stn-gluon", description="Spatial Transformer Networks for MXNet Gluon")
    parser.add_argument("--version", action="version", version=f"stn-gluon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in (_add_train, _add_launch, _add_export_onnx, _add_predict, _add_serve, _add_models, _add_bench,
                _add_evaluate, _add_visualize, _add_make_dataset):
        add(sub)
    return parser


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train STNNet (or the baseline) on MNIST or a distorted MNIST with Gluon")
    add_train_args(p)
    p = sub.add_parser("train-symbol", help="train the same network as an mx.sym graph with Module.fit "
                                            "(save dir: runs/<model>_module)")
    add_train_args(p, skip=("hybridize",))


LAUNCH_DESCRIPTION = ("Run train/train-symbol (or any program) as a distributed job on MXNet's parameter server: "
                      "a scheduler, servers and workers (docs/distributed.md).")
#: ``launch --help``'s last words: what a job's ports expose.
LAUNCH_SECURITY = ("Security: MXNet's parameter server has no authentication, and every server (whatever the "
                   "kvstore) unpickles the commands it receives: anyone who can reach a job's ports can run code "
                   "as you. The local launcher listens on 127.0.0.1 only (inherited DMLC_* variables are ignored). "
                   "With --launcher ssh, the job's ports must be reachable only from its own hosts (a private "
                   "network, a firewall), never from the internet; ssh accepts a new host key but refuses a "
                   "changed one (StrictHostKeyChecking=accept-new), and only OMP_NUM_THREADS, KMP_AFFINITY, "
                   "LD_LIBRARY_PATH and the job's DMLC_* variables travel on the remote command line, never a "
                   "credential.")


def _add_launch(sub: Any) -> None:
    p = sub.add_parser("launch", help="run train/train-symbol as a distributed job: a scheduler, servers and "
                                      "workers (MXNet's parameter server; docs/distributed.md)",
                       description=LAUNCH_DESCRIPTION, epilog=LAUNCH_SECURITY)
    p.add_argument("-n", "--num-workers", type=positive_int, required=True, help="worker processes")
    p.add_argument("-s", "--num-servers", type=positive_int, default=1, help="server processes (default: 1)")
    p.add_argument("--launcher", choices=["local", "ssh"], default="local",
                   help="local: every process on this machine, on 127.0.0.1; ssh: servers and workers on the "
                        "machines of --hostfile (default: local)")
    p.add_argument("-H", "--hostfile", default=None, help="ssh: one machine a line, host or host:ssh_port")
    p.add_argument("--port", type=positive_int, default=None, help="the scheduler's port (default: a free one)")
    p.add_argument("--host-ip", default=None, help="ssh: the address of this machine (the scheduler) the others "
                                                   "reach (default: found as dmlc_tracker does)")
    p.add_argument("--timeout", type=finite_float, default=None,
                   help="stop the whole job after this many seconds (default: none)")
    p.add_argument("worker_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="what each worker runs: train ... or train-symbol ... (--kvstore dist_sync is added if "
                        "not given), or any program")


def _add_export_onnx(sub: Any) -> None:
    p = sub.add_parser("export-onnx", help="export a saved model (Gluon export or Module checkpoint) to ONNX")
    p.add_argument("--model", required=True, help="save dir, export/checkpoint prefix, -symbol.json file or "
                                                  "pretrained:NAME")
    p.add_argument("--output", "-o", default=None, help="the .onnx file to write, in a folder that exists "
                                                       "(default: <prefix>.onnx beside the model)")
    p.add_argument("--opset", type=_opset, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (16 to 19: GridSample 'bilinear' and no AffineGrid; "
                        f"20: AffineGrid, GridSample 'linear'); see docs/export-onnx.md for which runtime wants which")
    p.add_argument("--input", dest="inputs", action="append", type=_input_spec, default=None, metavar="NAME=C,H,W",
                   help="export any graph, not just a classifier: one per data input of the graph, its shape "
                        "without the batch (dynamic in the file); the graph's own inputs and outputs are kept")
    p.add_argument("--no-parity-check", dest="parity_check", action="store_false",
                   help="skip the MXNet/ONNX Runtime parity check on random inputs")
    add_flags(p, QuantizeConfig)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="classify images or .npy arrays with a saved model; prints each input's "
                                       "class name (and index)")
    p.add_argument("inputs", nargs="+", metavar="FILE", help="PNG/JPEG/... images (read in the model's channels: "
                                                             "RGB for a colour model) or .npy arrays")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--backend", choices=["onnxruntime", "mxnet"], default=None,
                   help="default: onnxruntime for a .onnx model, mxnet otherwise")
    p.add_argument("--invert", dest="invert", action="store_const", const=True, default="auto",
                   help="digit models: invert every input (default: invert those that look dark on light; MNIST is "
                        "light on dark); refused for a model that is not a digit model, whose inputs are never "
                        "inverted")
    p.add_argument("--no-invert", dest="invert", action="store_const", const=False, help="invert no input")
    p.add_argument("--pixel-range", choices=PIXEL_RANGES, default="auto",
                   help=".npy value range (default auto: uint8 is 0..255, any other dtype 0..1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--save-rectified", metavar="DIR", default=None,
                   help="save what the STN made of each input as PNG in DIR (created if missing)")


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a saved model over HTTP (POST /v1/predict)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_flags(p, ServeConfig)


def _add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list the pretrained models shipped with the package (pretrained:NAME) "
                                      "and the architectures get_model builds")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks: speed, contention, time-to-accuracy, distortions")
    which = p.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=_Parser)
    which.required = True
    q = which.add_parser("speed", help="training/inference throughput (also of your own Gluon loop), PyTorch peer, "
                                       "memory, scaling")
    q.add_argument("--seconds", type=finite_float, default=1.0, help="length of one timed window")
    q.add_argument("--repeats", type=positive_int, default=5, help="timed windows per figure (median)")
    q.add_argument("--data-dir", default=None, help="MNIST for the memory measurement's training run")
    q.add_argument("--out", default="runs/bench_speed")
    q = which.add_parser("contention", help="training and serving speed beside busy processes and another "
                                            "training, for the thread defaults and the alternatives")
    q.add_argument("--quick", action="store_true", help="two settings, one short round: a smoke test")
    q.add_argument("--rounds", type=positive_int, default=None, help="rounds (median over them; default 3, quick 1)")
    q.add_argument("--seconds", type=finite_float, default=None, help="length of one timed window (default 1.5)")
    q.add_argument("--no-serving", dest="serving", action="store_false", help="training only")
    q.add_argument("--out", default="runs/bench_contention")
    q = which.add_parser("time-to-accuracy", help="wall time of a default training run to a test accuracy")
    q.add_argument("--target", type=finite_float, default=0.99)
    add_flags(q, TrainConfig, only=TIME_TO_ACCURACY_FLAGS, default_notes=recipe_notes)
    q.add_argument("--out", default="runs/bench_time_to_accuracy")
    q = which.add_parser("int8", help="fp32 against int8 ONNX Runtime: throughput and test accuracy of trained models")
    add_flags(q, Int8BenchConfig)
    q = which.add_parser("distortions", help="CNN vs ST-CNN on every distorted-MNIST dataset, within a budget")
    add_flags(q, DistortionBenchConfig)
    q = which.add_parser("loader", help="training images/s from a folder of PNGs (decoded once, cached) against "
                                        "the same images in memory, and streamed from disk")
    add_flags(q, LoaderBenchConfig)


def _add_evaluate(sub: Any) -> None:
    q = sub.add_parser("evaluate", help="test accuracy of a saved model")
    q.add_argument("--model", required=True, help="save dir, export prefix, -symbol.json file or pretrained:NAME")
    q.add_argument("--batch-size", type=positive_int, default=500)
    add_data_args(q, dataset_default=None)
    q.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_visualize(sub: Any) -> None:
    q = sub.add_parser("visualize", help="plot test images beside what a saved model's STN makes of them, "
                                         "or (without --model) samples of a dataset")
    q.add_argument("--model", default=None, help="save dir, export prefix, -symbol.json file or pretrained:NAME")
    q.add_argument("--batch-size", type=positive_int, default=500)
    add_data_args(q, dataset_default=None)
    q.add_argument("--out", default=None, help="PNG to write, in a folder that exists (default: "
                                               "stn_grid-<model dir name>-<dataset>.png in the current folder, "
                                               "never a file of the run; without --model: "
                                               "runs/datasets/<dataset>.png)")
    q.add_argument("--count", type=_count, default=64, help=f"how many test images (1..{MAX_VISUALIZE_COUNT})")


def _add_make_dataset(sub: Any) -> None:
    p = sub.add_parser("make-dataset", help="write a synthetic dataset to train on: signs, 43 traffic signs on "
                                            "cluttered photographic scenes, as a folder: dataset (docs/own-images.md)")
    p.add_argument("kind", choices=["signs"], help="which dataset (signs: the synthetic traffic-sign set)")
    p.add_argument("dir", metavar="DIR", help="the folder to write (DIR/train/<class>/*.png, DIR/test/...); it must "
                                               "be empty or missing unless --overwrite")
    add_flags(p, SignsConfig)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~stn_gluon.train.recipes.TrainConfig` of a ``train``/``train-symbol`` command line:
    the named recipe, with the flags the user gave on top."""
    values = values_from_args(TrainConfig, args)
    name = values.pop("recipe", "default")
    if args.no_stn:
        values["model"] = "lenet"
    if "save_dir" not in values and args.command == "train-symbol":
        values["save_dir"] = os.path.join("runs", values.get("model", TrainConfig.model) + "_module")
    return TrainConfig.from_recipe(name, **values)
