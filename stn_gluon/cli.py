"""The ``stn-gluon`` command line: ``train``, ``train-symbol``, ``evaluate``, ``visualize``,
``export-onnx``, ``predict``, ``serve``, ``bench``.

Every user mistake (bad flag value, missing or damaged file, wrong shape)
ends with a one-line ``error: ...`` on stderr and exit status 2.
"""
import argparse
import dataclasses
import json
import logging
import os
import sys

__all__ = ["main", "build_parser", "add_train_args", "train_config_from_args"]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


MAX_VISUALIZE_COUNT = 128  # 16 rows of 8: more draws digits too small to read


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: any free port), got {value}")
    return value


def _count(text):
    value = _positive_int(text)
    if value > MAX_VISUALIZE_COUNT:
        raise argparse.ArgumentTypeError(f"at most {MAX_VISUALIZE_COUNT} images fit one readable plot, "
                                         f"got {value}")
    return value


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _transform_name(text):
    from .errors import StnGluonError
    from .ops import get_transform

    try:
        return get_transform(text).name
    except StnGluonError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _dataset_name(text):
    from .distortions import DATASETS

    if text not in DATASETS:
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose one of {', '.join(DATASETS)}")
    return text


def add_data_args(p, dataset_default="mnist"):
    p.add_argument("--data-dir", help="folder with the four MNIST IDX files (.gz or raw); "
                   "default: $STN_GLUON_DATA, then ~/.mxnet/datasets/mnist, then the embedded sample")
    p.add_argument("--download", action="store_true",
                   help="if no MNIST files are found, fetch them with Gluon's downloader "
                        "(off by default: nothing uses the network unless asked)")
    p.add_argument("--ctx", default="cpu", help="cpu, cpu:0,1, gpu:0 or gpu:0,1 (several = data-parallel)")
    p.add_argument("--dataset", type=_dataset_name, default=dataset_default,
                   help="mnist, rotated, rts, projective, elastic, cluttered or noisy128 (distorted sets are "
                        "generated from MNIST once and cached)" + ("" if dataset_default else
                                                                    "; default: the model's own"))


def add_train_args(p, skip=()):
    """The training flags of ``train`` and ``train-symbol``: one per :class:`~stn_gluon.recipes.TrainConfig`
    field, with its help, default and the other recipes' values."""
    from .flags import add_flags
    from .recipes import TrainConfig, recipe_notes

    add_flags(p, TrainConfig, skip=skip, default_notes=recipe_notes)
    p.add_argument("--no-stn", action="store_true", help="train the same network without the STN (the baseline)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``stn-gluon train: error: ...``), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: The training flags `bench time-to-accuracy` takes (the rest of the run is the recipe's).
TIME_TO_ACCURACY_FLAGS = ("recipe", "epochs", "batch_size", "lr", "data_dir")


def build_parser():
    from .flags import add_flags
    from .inputs import PIXEL_RANGES
    from .recipes import TrainConfig, recipe_notes

    from . import __version__

    parser = _Parser(prog="stn-gluon", description="Spatial Transformer Networks for MXNet Gluon")
    parser.add_argument("--version", action="version", version=f"stn-gluon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", help="train STNNet (or the baseline) on MNIST or a distorted MNIST with Gluon")
    add_train_args(p)
    p = sub.add_parser("train-symbol", help="train the same network as an mx.sym graph with Module.fit "
                                            "(save dir: runs/<model>_module)")
    add_train_args(p, skip=("hybridize",))

    p = sub.add_parser("export-onnx", help="export a saved model (Gluon export or Module checkpoint) to ONNX")
    p.add_argument("--model", required=True, help="save dir, export/checkpoint prefix or -symbol.json file")
    p.add_argument("--output", "-o", default=None, help="the .onnx file to write, in a folder that exists "
                                                       "(default: <prefix>.onnx beside the model)")
    p.add_argument("--opset", type=_positive_int, default=20, help="ONNX opset (>= 20, for AffineGrid)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the MXNet/ONNX Runtime parity check on random inputs")

    p = sub.add_parser("predict", help="classify images or .npy arrays with a saved model")
    p.add_argument("inputs", nargs="+", metavar="FILE", help="PNG/JPEG/... images or .npy arrays")
    p.add_argument("--model", required=True, help=".onnx file, save dir, or export prefix")
    p.add_argument("--backend", choices=["onnxruntime", "mxnet"], default=None,
                   help="default: onnxruntime for a .onnx model, mxnet otherwise")
    p.add_argument("--invert", dest="invert", action="store_const", const=True, default="auto",
                   help="invert every input (default: invert those that look dark on light; MNIST is light on dark)")
    p.add_argument("--no-invert", dest="invert", action="store_const", const=False, help="invert no input")
    p.add_argument("--pixel-range", choices=PIXEL_RANGES, default="auto",
                   help=".npy value range (default auto: uint8 is 0..255, any other dtype 0..1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--save-rectified", metavar="DIR", default=None,
                   help="save what the STN made of each input as PNG in DIR (created if missing)")

    p = sub.add_parser("serve", help="serve a saved model over HTTP (POST /v1/predict)")
    p.add_argument("--model", required=True, help=".onnx file, save dir, or export prefix")
    p.add_argument("--backend", choices=["mxnet", "onnxruntime"], default=None,
                   help="default: onnxruntime for a .onnx model, mxnet otherwise")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=_port, default=8080, help="port, 0..65535 (0: any free one)")
    p.add_argument("--max-batch", type=_positive_int, default=32, help="images per inference batch (1: no batching)")
    p.add_argument("--max-wait-ms", type=_float, default=5.0, help="how long a batch waits to fill")
    p.add_argument("--max-body-bytes", type=_positive_int, default=8 * 1024 * 1024)
    p.add_argument("--max-pixels", type=_positive_int, default=16 * 1024 * 1024,
                   help="largest image (width x height) accepted before decoding")
    p.add_argument("--max-instances", type=_positive_int, default=256, help="images per request")
    p.add_argument("--timeout-s", type=_float, default=30.0, help="request timeout; also the shutdown grace")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for ONNX Runtime (default: all)")

    p = sub.add_parser("bench", help="benchmarks: speed, time-to-accuracy, distortions")
    which = p.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=_Parser)
    which.required = True
    q = which.add_parser("speed", help="training/inference throughput (also of your own Gluon loop), PyTorch peer, "
                                       "memory, scaling")
    q.add_argument("--seconds", type=_float, default=1.0, help="length of one timed window")
    q.add_argument("--repeats", type=_positive_int, default=5, help="timed windows per figure (median)")
    q.add_argument("--data-dir", default=None, help="MNIST for the memory measurement's training run")
    q.add_argument("--out", default="runs/bench_speed")
    q = which.add_parser("time-to-accuracy", help="wall time of a default training run to a test accuracy")
    q.add_argument("--target", type=_float, default=0.99)
    add_flags(q, TrainConfig, only=TIME_TO_ACCURACY_FLAGS, default_notes=recipe_notes)
    q.add_argument("--out", default="runs/bench_time_to_accuracy")
    q = which.add_parser("distortions", help="CNN vs ST-CNN on every distorted-MNIST dataset, within a budget")
    from .distortion_bench import DistortionBenchConfig
    from .flags import add_flags

    add_flags(q, DistortionBenchConfig)

    q = sub.add_parser("evaluate", help="test accuracy of a saved model")
    q.add_argument("--model", required=True, help="save dir, export prefix or -symbol.json file")
    q.add_argument("--batch-size", type=_positive_int, default=500)
    add_data_args(q, dataset_default=None)
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q = sub.add_parser("visualize", help="plot test images beside what a saved model's STN makes of them, "
                                         "or (without --model) samples of a dataset")
    q.add_argument("--model", default=None, help="save dir, export prefix or -symbol.json file")
    q.add_argument("--batch-size", type=_positive_int, default=500)
    add_data_args(q, dataset_default=None)
    q.add_argument("--out", default=None, help="PNG to write, in a folder that exists (default: "
                                               "stn_grid-<model dir name>-<dataset>.png in the current folder, "
                                               "never a file of the run; without --model: "
                                               "runs/datasets/<dataset>.png)")
    q.add_argument("--count", type=_count, default=64, help=f"how many test images (1..{MAX_VISUALIZE_COUNT})")
    return parser


def train_config_from_args(args):
    """The :class:`~stn_gluon.recipes.TrainConfig` of a ``train``/``train-symbol`` command line:
    the named recipe, with the flags the user gave on top."""
    from .flags import values_from_args
    from .recipes import TrainConfig

    values = values_from_args(TrainConfig, args)
    name = values.pop("recipe", "default")
    if args.no_stn:
        values["model"] = "lenet"
    if "save_dir" not in values and args.command == "train-symbol":
        values["save_dir"] = os.path.join("runs", values.get("model", TrainConfig.model) + "_module")
    return TrainConfig.from_recipe(name, **values)


def _note(line):
    print(line, file=sys.stderr, flush=True)


def _cmd_train(args):
    from .training import fit

    fit(train_config_from_args(args))


def _cmd_train_symbol(args):
    from .symbol.train import fit_module

    fit_module(train_config_from_args(args))


def _test_batches(args, meta):
    from . import data as data_lib
    from .distortions import load_dataset

    dataset = load_dataset(args.dataset or meta.get("dataset") or "mnist", args.data_dir, download=args.download)
    pixels = data_lib.with_channel(dataset.test_images)
    if tuple(pixels.shape[1:]) != tuple(meta["input_shape"]):
        from .errors import StnGluonError
        raise StnGluonError(f"the model expects input {tuple(meta['input_shape'])}, "
                            f"the {args.dataset or meta.get('dataset') or 'mnist'} data is {tuple(pixels.shape[1:])}")
    return dataset, pixels, data_lib.ArrayBatches(pixels, dataset.test_labels, args.batch_size,
                                                  mean=meta["mean"], std=meta["std"])


def _cmd_evaluate(args):
    from .context import parse_ctx
    from .export import load_model
    from .reporting import test_line
    from .training import evaluate

    ctx = parse_ctx(args.ctx)
    model = load_model(args.model, ctx)
    dataset, _, batches = _test_batches(args, model.meta)
    loss, correct, total = evaluate(model.net, batches, ctx)
    if args.json:
        print(json.dumps(dict(model=model.prefix, epoch=model.epoch, test_loss=loss, test_correct=correct,
                              test_total=total, test_accuracy=correct / total, data_source=dataset.source)))
    else:
        print(f"{model.prefix} on {dataset.describe()}")
        print(test_line(loss, correct, total))


def _cmd_visualize(args):
    import mxnet as mx

    from .context import parse_ctx
    from .errors import StnGluonError
    from .export import load_model
    from .paths import writable_file
    from .training import stn_batch
    from .visualize import default_visualize_out, plot_stn_grid

    from . import data as data_lib

    if args.model is None:
        return _visualize_dataset(args)
    if args.out:
        writable_file(args.out, "--out", suffix=".png")
    ctx = parse_ctx(args.ctx)
    model = load_model(args.model, ctx)
    if model.stn is None:
        raise StnGluonError(f"{model.prefix}: this model has no spatial transformer to show")
    out = args.out or default_visualize_out(model.prefix, args.dataset or model.meta.get("dataset") or "mnist")
    writable_file(out, "--out")
    _, pixels, _ = _test_batches(args, model.meta)
    images = data_lib.normalize(pixels[:args.count], model.meta["mean"], model.meta["std"])
    plot_stn_grid(images, stn_batch(model.stn, mx.nd.array(images, ctx=ctx[0])), out,
                  model.meta["mean"], model.meta["std"], title=os.path.basename(model.prefix))
    print(f"Wrote {out}")


def _visualize_dataset(args):
    from .distortions import load_dataset
    from .paths import writable_dir, writable_file
    from .visualize import plot_samples

    name = args.dataset or "mnist"
    out = args.out or os.path.join("runs", "datasets", f"{name}.png")
    if args.out:
        writable_file(out, "--out", suffix=".png")
    else:  # the default's folder is made (and said so) once the data has loaded
        writable_dir(os.path.dirname(out), "the default --out")
    dataset = load_dataset(name, args.data_dir, download=args.download)
    if not args.out:
        writable_dir(os.path.dirname(out), "the default --out", create=True, note=_note)
    plot_samples(dataset.test_images[:args.count], dataset.test_labels[:args.count], out,
                 title=f"{name}: {dataset.describe()}")
    print(f"Wrote {out}")


def _cmd_export_onnx(args):
    from .onnx import export_onnx
    from .export import resolve_model
    from .paths import writable_file

    if args.output is not None:
        writable_file(args.output, "-o/--output", suffix=".onnx")
    prefix, _ = resolve_model(args.model)
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(prefix)), os.path.basename(prefix) + ".onnx")
    writable_file(out, "-o/--output" if args.output is not None else "the default -o/--output")
    export_onnx(args.model, out, opset=args.opset)
    print(f"Wrote {out} (opset {args.opset}, dynamic batch)")
    if args.check:
        _check_onnx_parity(args.model, out)


def _check_onnx_parity(model_path, onnx_path):
    import numpy as np

    from .inference import load_predictor

    mx_model, ort_model = load_predictor(model_path, "mxnet"), load_predictor(onnx_path, "onnxruntime")
    x = np.random.RandomState(0).randn(16, *mx_model.input_shape).astype(np.float32)
    a, b = mx_model.predict(x), ort_model.predict(x)
    diff = float(np.abs(a["logits"] - b["logits"]).max())
    print(f"Parity on 16 random inputs: max |logit difference| {diff:.2e}")
    if diff > 1e-4:
        from .errors import StnGluonError
        raise StnGluonError(f"ONNX Runtime and MXNet disagree (max |logit difference| {diff:.2e} > 1e-4)")


def _cmd_predict(args):
    from .inference import describe, load_predictor, preprocess, to_png
    from .inputs import apply_polarity, load_inputs
    from .io import atomic_write_bytes
    from .paths import writable_dir

    if args.save_rectified:
        writable_dir(args.save_rectified, "--save-rectified")
    predictor = load_predictor(args.model, args.backend)
    pixels, names = load_inputs(args.inputs, predictor.input_shape, args.pixel_range)
    pixels, inverted = apply_polarity(pixels, args.invert)
    if args.invert == "auto" and inverted.any():
        shown = [n for n, flag in zip(names, inverted) if flag]
        print(f"note: inverted {len(shown)} of {len(names)} input(s) that look dark on light ("
              f"{', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}); --no-invert keeps them as they are",
              file=sys.stderr)
    outputs = predictor.predict(preprocess(pixels, predictor.mean, predictor.std))
    results = describe(outputs, predictor.classes, names, inverted)
    if args.save_rectified:
        if "warped" not in outputs:
            from .errors import StnGluonError
            raise StnGluonError("--save-rectified: this model has no spatial transformer")
        writable_dir(args.save_rectified, "--save-rectified", create=True, note=_note)
        for i, entry in enumerate(results):
            stem = os.path.splitext(os.path.basename(entry["input"].split("[")[0]))[0]
            suffix = entry["input"][len(entry["input"].split("[")[0]):].strip("[]")
            path = os.path.join(args.save_rectified, f"{stem}{'_' + suffix if suffix else ''}_rectified.png")
            atomic_write_bytes(path, to_png(outputs["warped"][i], predictor.mean, predictor.std))
            entry["rectified"] = path
    if args.json:
        print(json.dumps(dict(backend=predictor.backend, predictions=results)))
        return
    for entry in results:
        p = entry["probabilities"][entry["label"]]
        theta = "" if entry["theta"] is None else " theta [" + ", ".join(f"{t:.3f}" for t in entry["theta"]) + "]"
        note = " (inverted)" if entry["inverted"] else ""
        print(f"{entry['input']}: {entry.get('class', entry['label'])} (p={p:.4f}){theta}{note}")


def _cmd_serve(args):
    from .serving import ServeConfig, serve

    serve(ServeConfig(model=args.model, backend=args.backend, host=args.host, port=args.port,
                      max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes,
                      max_pixels=args.max_pixels, max_instances=args.max_instances, timeout_s=args.timeout_s,
                      threads=args.threads), echo=lambda line: print(line, flush=True))


def _cmd_bench(args):
    from .paths import writable_dir

    out = args.out
    if out is None:  # bench distortions: the config's default, where the flag was not given
        from .distortion_bench import DistortionBenchConfig

        out = DistortionBenchConfig.out
    writable_dir(out, "--out")  # checked before the bench's minutes of work; the bench makes it when it writes
    _run_bench(args)


def _run_bench(args):
    from .bench import speed_report, time_to_accuracy
    from .reporting import write_report

    if args.bench == "distortions":
        from .distortion_bench import DistortionBenchConfig, run_distortion_bench
        from .flags import values_from_args

        run_distortion_bench(DistortionBenchConfig(**values_from_args(DistortionBenchConfig, args)))
    elif args.bench == "speed":
        lines, results = speed_report(seconds=args.seconds, repeats=args.repeats, data_dir=args.data_dir,
                                      echo=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
        write_report(args.out, lines, dict(results=results))
    else:
        from .flags import values_from_args
        from .recipes import TrainConfig

        overrides = values_from_args(TrainConfig, args)
        recipe, data_dir = overrides.pop("recipe", "default"), overrides.pop("data_dir", None)
        result = time_to_accuracy(args.target, data_dir, echo=print, recipe=recipe, **overrides)
        if result["seconds"] is None:
            lines = [f"Test accuracy never reached {100 * args.target:.1f} % in {result['epochs_run']} epochs."]
        else:
            startup = ("" if result["startup_seconds"] is None else
                       f", of which {result['startup_seconds']:.1f} s before the data loads")
            lines = [f"Time to {100 * args.target:.1f} % test accuracy from process start: {result['seconds']:.1f} s"
                     f"{startup} "
                     f"(epoch {result['epoch']} of {result['recipe']['epochs']:g}, {100 * result['test_acc']:.2f} %, "
                     f"batch {result['recipe']['batch_size']}, lr {result['recipe']['lr']}) on {result['data_source']}."]
        write_report(args.out, lines, dict(result=result))


COMMANDS = {"train": _cmd_train, "train-symbol": _cmd_train_symbol, "evaluate": _cmd_evaluate,
            "visualize": _cmd_visualize, "export-onnx": _cmd_export_onnx, "predict": _cmd_predict,
            "serve": _cmd_serve, "bench": _cmd_bench}


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    import mxnet as mx

    from .errors import StnGluonError, mxnet_message

    try:
        COMMANDS[args.command](args)
    except StnGluonError as err:  # the library names parameters; here they are flags
        print(f"error: {err.for_cli()}", file=sys.stderr)
        return 2
    except mx.base.MXNetError as err:
        print(f"error: MXNet: {mxnet_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a safety net: the commands check their paths first
        from .paths import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ("; the last finished epoch is checkpointed (continue with --resume)"
                if args.command in ("train", "train-symbol") else "")
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
