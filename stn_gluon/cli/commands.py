"""What each ``stn-gluon`` subcommand does, given its parsed arguments (:data:`COMMANDS`)."""
import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._runtime.errors import StnGluonError
from .._runtime.files import atomic_write_bytes
from .._runtime.flags import validate_fields, values_from_args
from .._runtime.paths import readable_path, writable_dir, writable_file
from ..bench.distortions import DistortionBenchConfig, run_distortion_bench
from ..bench.int8 import Int8BenchConfig, run_int8_bench
from ..bench.loader import LoaderBenchConfig, run_loader_bench
from ..data.dataset import spread_index
from ..data.signs import SignsConfig, make_signs_dataset
from ..data.sources import parse_spec
from ..export.int8 import QuantizeConfig, described_dataset, quantize_export
from ..nn.pretrained import PREFIX, get_pretrained, is_pretrained_ref, list_pretrained, model_or_default
from ..serve.app import ServeConfig, serve
from ..serve.inputs import apply_rules, read_inputs
from ..train.distributed import launch
from ..train.recipes import TrainConfig
from .parser import train_config_from_args

__all__ = ["COMMANDS", "worker_command", "TRAIN_COMMANDS"]


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_train(args: argparse.Namespace) -> None:
    from ..train.gluon import fit  # lazy: per command, keeps --help fast

    fit(train_config_from_args(args))


def _cmd_train_symbol(args: argparse.Namespace) -> None:
    from ..train.module import fit_module  # lazy: per command, keeps --help fast

    fit_module(train_config_from_args(args))


#: The subcommands ``launch`` runs as workers with this package (the rest of a command runs as it is).
TRAIN_COMMANDS = ("train", "train-symbol")


def worker_command(argv: Sequence[str], python: Optional[str] = None) -> List[str]:
    """The argv each worker of ``stn-gluon launch`` runs for ``argv`` (what follows ``--``).

    ``train ...`` / ``train-symbol ...`` run this package with ``python``
    (default: this interpreter), with ``--kvstore dist_sync`` unless a kvstore is given.
    """
    argv = list(argv[1:] if argv and argv[0] == "--" else argv)
    if argv and argv[0] in TRAIN_COMMANDS:
        if not any(a == "--kvstore" or a.startswith("--kvstore=") for a in argv):
            argv += ["--kvstore", "dist_sync"]
        argv = [python or sys.executable, "-m", "stn_gluon"] + argv
    return argv


def _cmd_launch(args: argparse.Namespace) -> None:
    command = worker_command(args.worker_command, None if args.launcher == "local" else "python3")
    code = launch(command, args.num_workers, args.num_servers, launcher=args.launcher, hostfile=args.hostfile,
                  port=args.port, host_ip=args.host_ip, timeout=args.timeout,
                  echo=lambda line: print(line, file=sys.stderr, flush=True))
    if code:
        sys.exit(code)


def _test_batches(args: argparse.Namespace, meta: Dict[str, Any]) -> Tuple[Any, np.ndarray, Any]:
    from ..data import mnist as data_lib  # lazy: per command, keeps --help fast
    from ..data.sources import load_for_model  # lazy: per command, keeps --help fast

    own = meta.get("dataset")
    name = args.dataset or own or "mnist"  # images from disk: read as the model's training did
    spec, options = parse_spec(name), meta.get("data_options")
    other = spec is not None and (own is None or ":" not in own or spec != parse_spec(own))
    # a csv:/rec: file read on its own would not have its labels mapped onto the model's classes
    if spec is not None and other and spec.kind != "folder":
        raise StnGluonError(f"{name}: another dataset is evaluated from a folder (folder:PATH with a test/ "
                            f"folder of the model's class folders); a csv: or rec: test set is given at training "
                            f"(--test-dataset)")
    if other:  # another folder: its own test split, not the model's test set
        options = dict(options or {}, test=None)
    dataset = load_for_model(name, meta["input_shape"], args.data_dir, args.download, options)
    if not dataset.has_test:
        raise StnGluonError(f"{name} has no test split to evaluate on "
                            f"({'give a folder with a test/ folder' if other else 'train with --test-dataset'})")
    # the data comes with its own class names; a model trained with --class-names records those as class_folders
    # (one from before that record: only their number can be compared)
    own_names = meta.get("class_folders")
    renamed = not own_names and bool((options or {}).get("class_names"))
    if (other or own_names or renamed) and meta.get("classes"):
        want = None if renamed else list(own_names or meta["classes"])
        _check_classes(name, list(dataset.classes or []), want, list(meta["classes"]))
        dataset.classes = list(meta["classes"])  # shown by the model's names
    pixels = data_lib.with_channel(dataset.test_images)
    if tuple(pixels.shape[1:]) != tuple(meta["input_shape"]):
        raise StnGluonError(f"the model expects input {tuple(meta['input_shape'])}, "
                            f"the {args.dataset or meta.get('dataset') or 'mnist'} data is {tuple(pixels.shape[1:])}")
    return dataset, pixels, data_lib.ArrayBatches(pixels, dataset.test_labels, args.batch_size,
                                                  mean=meta["mean"], std=meta["std"])


def _check_classes(name: str, got: List[str], want: Optional[List[str]], named: List[str]) -> None:
    """Refuse (one line) a dataset whose classes are not the model's, naming the first difference. want: the
    model's classes as the data names them (``None``: unknown, only their number is compared); named: the
    model's names of them (they differ where a names file renamed the data's)."""
    if len(got) != len(named):
        raise StnGluonError(f"{name}: it has {len(got)} classes, the model {len(named)}")
    if want is None or got == want:
        return
    k = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    alias = f" ({named[k]})" if named[k] != want[k] else ""
    raise StnGluonError(f"{name}: its class {k} is {got[k]!r}, the model's is {want[k]!r}{alias} "
                        f"(the classes must be the model's, in its order)")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .._runtime.devices import parse_ctx  # lazy: MXNet
    from ..export.saved import load_model  # lazy: per command, keeps --help fast
    from ..train.reporting import test_line  # lazy: per command, keeps --help fast
    from ..train.gluon import evaluate  # lazy: per command, keeps --help fast

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


def _cmd_visualize(args: argparse.Namespace) -> None:
    from .._runtime.devices import parse_ctx  # lazy: MXNet
    from ..nn.explain import explain_batch  # lazy: per command, keeps --help fast
    from ..export.saved import load_model  # lazy: per command, keeps --help fast
    from ..train.plots import default_visualize_out, plot_explained  # lazy: per command, keeps --help fast

    from ..data import mnist as data_lib  # lazy: per command, keeps --help fast

    if args.model is None:
        _visualize_dataset(args)
        return
    if args.out:
        writable_file(args.out, "--out", suffix=".png")
    ctx = parse_ctx(args.ctx)
    model = load_model(args.model, ctx)
    if model.stn is None:
        raise StnGluonError(f"{model.prefix}: this model has no spatial transformer to show")
    out = args.out or default_visualize_out(model.prefix, args.dataset or model.meta.get("dataset") or "mnist")
    writable_file(out, "--out")
    dataset, pixels, _ = _test_batches(args, model.meta)
    index = spread_index(len(dataset.test_labels), args.count)  # every class of a split stored class by class
    images = data_lib.normalize(pixels[index], model.meta["mean"], model.meta["std"])

    name = args.model if is_pretrained_ref(args.model) else os.path.basename(os.path.dirname(model.prefix) or ".")
    plot_explained(explain_batch(model, images, np.asarray(dataset.test_labels)[index]), out,
                   title=f"{name} on {dataset.describe()}")
    print(f"Wrote {out}")


def _visualize_dataset(args: argparse.Namespace) -> None:
    from ..data.distortions import load_dataset  # lazy: per command, keeps --help fast
    from ..train.plots import plot_samples  # lazy: per command, keeps --help fast

    name = args.dataset or "mnist"
    if parse_spec(name) is not None:
        raise StnGluonError(f"visualize without --model shows the MNIST sets, not {name}: open its images, or "
                            f"give --model to see what a model's STN makes of them")
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


def _cmd_export_onnx(args: argparse.Namespace) -> None:
    from ..export.saved import resolve_model  # lazy: per command, keeps --help fast

    quantize = QuantizeConfig(**values_from_args(QuantizeConfig, args))
    validate_fields(quantize)  # before the fp32 export: a wrong --quantize flag writes nothing
    if args.output is not None:
        writable_file(args.output, "-o/--output", suffix=".onnx")
    if quantize.calibration is not None:
        readable_path(quantize.calibration, "--calibration", kind="file")

    prefix, _ = resolve_model(args.model)
    if is_pretrained_ref(args.model):  # never into the installed package: <name>.onnx here
        out = args.output or args.model[len(PREFIX):] + ".onnx"
    else:
        out = args.output or os.path.join(os.path.dirname(os.path.abspath(prefix)), os.path.basename(prefix) + ".onnx")
    writable_file(out, "-o/--output" if args.output is not None else "the default -o/--output")
    if args.inputs:
        if quantize.quantize is not None:
            raise StnGluonError("--quantize int8 applies to the classifier export; a graph given with --input is "
                                "exported in float (quantize it with stn_gluon.export.onnx.quantize_onnx)")
        _export_any_graph(args, out)
        return
    from ..export.onnx import export_onnx  # lazy: per command, keeps --help fast

    export_onnx(args.model, out, opset=args.opset)
    print(f"Wrote {out} (opset {args.opset}, dynamic batch)")
    if args.parity_check:
        _check_onnx_parity(args.model, out)
    quantize_export(out, quantize, dataset=described_dataset(prefix))


def _export_any_graph(args: argparse.Namespace, out: str) -> None:
    """``export-onnx --input NAME=C,H,W ...``: any graph, its own inputs and outputs kept."""
    from ..export.onnx import export_graph  # lazy: per command, keeps --help fast

    shapes = dict(args.inputs)
    if len(shapes) != len(args.inputs):
        raise StnGluonError(f"--input names an input twice ({', '.join(n for n, _ in args.inputs)})")
    export_graph(args.model, out, shapes, opset=args.opset)
    described = ", ".join(f"{name} (N, {', '.join(map(str, shape))})" for name, shape in shapes.items())
    print(f"Wrote {out} (opset {args.opset}, inputs {described})")
    if args.parity_check:
        from ..export.onnx import graph_parity  # lazy: per command, keeps --help fast

        diff = graph_parity(args.model, out, shapes)
        print(f"Parity on 16 random inputs: max |output difference| {diff:.2e}")
        if diff > 1e-4:
            raise StnGluonError(f"ONNX Runtime and MXNet disagree (max |output difference| {diff:.2e} > 1e-4)")


def _check_onnx_parity(model_path: str, onnx_path: str) -> None:
    from ..serve.predictors import load_predictor  # lazy: per command, keeps --help fast

    mx_model, ort_model = load_predictor(model_path, "mxnet"), load_predictor(onnx_path, "onnxruntime")
    x = np.random.RandomState(0).randn(16, *mx_model.input_shape).astype(np.float32)
    a, b = mx_model.predict(x), ort_model.predict(x)
    diff = float(np.abs(a["logits"] - b["logits"]).max())
    print(f"Parity on 16 random inputs: max |logit difference| {diff:.2e}")
    if diff > 1e-4:
        raise StnGluonError(f"ONNX Runtime and MXNet disagree (max |logit difference| {diff:.2e} > 1e-4)")


def _rectified_paths(folder: str, inputs: Sequence[str]) -> List[str]:
    """Where ``predict --save-rectified`` writes each input's rectified image: ``NAME_rectified.png`` (``NAME_3``
    for the fourth image of ``NAME.npy``). Two different inputs that would get the same file (``a/1.png`` and
    ``b/1.png``) are refused with one line, before anything is written."""
    paths: List[str] = []
    first: Dict[str, str] = {}
    for name in inputs:
        base = name.split("[")[0]
        stem = os.path.splitext(os.path.basename(base))[0]
        suffix = name[len(base):].strip("[]")
        path = os.path.join(folder, f"{stem}{'_' + suffix if suffix else ''}_rectified.png")
        if first.setdefault(path, name) != name:
            raise StnGluonError(f"--save-rectified: {first[path]} and {name} would both be saved as {path}; "
                                f"rename one, or run predict once per folder")
        paths.append(path)
    return paths


def _cmd_predict(args: argparse.Namespace) -> None:
    from ..serve.predictors import describe, load_predictor, preprocess, to_png  # lazy: per command, keeps --help fast

    if args.save_rectified:
        writable_dir(args.save_rectified, "--save-rectified")
    model = model_or_default(args.model, _note)
    predictor = load_predictor(model, args.backend)
    spec = predictor.input_spec()
    if args.invert is True and not spec.digits:
        raise StnGluonError(f"--invert: {model} is not a digit model (digits: false in its metadata); its inputs "
                            f"are never inverted")
    batch = read_inputs(args.inputs, spec, args.pixel_range)
    names = batch.names
    paths = _rectified_paths(args.save_rectified, names) if args.save_rectified else []  # refused before predicting
    pixels, inverted = apply_rules(batch.pixels, batch.rules, spec.digits, args.invert)
    if args.invert == "auto" and inverted.any():
        shown = [n for n, flag in zip(names, inverted) if flag]
        print(f"note: inverted {len(shown)} of {len(names)} input(s) that look dark on light ("
              f"{', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}); --no-invert keeps them as they are",
              file=sys.stderr)
    outputs = predictor.predict(preprocess(pixels, predictor.mean, predictor.std))
    results = describe(outputs, predictor.classes, names, inverted, batch.rules)
    if args.save_rectified:
        if "warped" not in outputs:
            raise StnGluonError("--save-rectified: this model has no spatial transformer")
        writable_dir(args.save_rectified, "--save-rectified", create=True, note=_note)
        for i, (entry, path) in enumerate(zip(results, paths)):  # describe() keeps the inputs' order and names
            atomic_write_bytes(path, to_png(outputs["warped"][i], predictor.mean, predictor.std))
            entry["rectified"] = path
    if args.json:
        print(json.dumps(dict(backend=predictor.backend, predictions=results)))
        return
    for entry in results:
        print(_prediction_line(entry))


def _prediction_line(entry: Dict[str, Any]) -> str:
    """One prediction of ``predict`` as text: ``INPUT: CLASS (p=P)``, with the class index beside a class
    name other than the index itself (``photo.png: stop (class 0, p=0.9731)``), theta and the rules applied."""
    p = entry["probabilities"][entry["label"]]
    name = entry["class"]
    index = "" if name == str(entry["label"]) else f"class {entry['label']}, "
    theta = "" if entry["theta"] is None else " theta [" + ", ".join(f"{t:.3f}" for t in entry["theta"]) + "]"
    rules = f" ({', '.join(entry['rules'])})" if entry.get("rules") else ""
    return f"{entry['input']}: {name} ({index}p={p:.4f}){theta}{rules}"


def _cmd_models(args: argparse.Namespace) -> None:
    from ..nn.zoo import list_models  # lazy: per command, keeps --help fast

    shipped = [get_pretrained(name) for name in list_pretrained()]
    if args.json:
        print(json.dumps(dict(pretrained=[dict(name=m.name, model=m.ref, summary=m.summary,
                                               test_accuracy=m.test_accuracy, data=m.metrics.get("data_source"),
                                               command=m.provenance.get("command"),
                                               commit=m.provenance.get("commit")) for m in shipped],
                              architectures=list_models())))
        return
    print("Pretrained (--model pretrained:NAME, get_model(NAME, pretrained=True)):")
    for m in shipped:
        print(f"  {m.describe()}")
    print(f"Architectures (get_model(NAME), untrained): {', '.join(list_models())}, stn_<gluoncv zoo name>")


def _cmd_serve(args: argparse.Namespace) -> None:
    serve(ServeConfig(**values_from_args(ServeConfig, args)), echo=lambda line: print(line, flush=True))


def _cmd_bench(args: argparse.Namespace) -> None:
    out = args.out
    if out is None:  # bench distortions, loader: the config's default, where the flag was not given
        out = LoaderBenchConfig.out if args.bench == "loader" else DistortionBenchConfig.out
    writable_dir(out, "--out")  # checked before the bench's minutes of work; the bench makes it when it writes
    _run_bench(args)


def _run_bench(args: argparse.Namespace) -> None:
    from ..bench import speed_report, time_to_accuracy  # lazy: per command, keeps --help fast
    from ..train.reporting import write_report  # lazy: per command, keeps --help fast

    if args.bench == "int8":
        run_int8_bench(Int8BenchConfig(**values_from_args(Int8BenchConfig, args)),
                       echo=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    elif args.bench == "distortions":
        run_distortion_bench(DistortionBenchConfig(**values_from_args(DistortionBenchConfig, args)))
    elif args.bench == "loader":
        run_loader_bench(LoaderBenchConfig(**values_from_args(LoaderBenchConfig, args)),
                         echo=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    elif args.bench == "contention":
        from ..bench.contention import contention_report  # lazy: per command, keeps --help fast

        lines, results = contention_report(quick=args.quick, rounds=args.rounds, seconds=args.seconds,
                                           serving=args.serving,
                                           echo=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
        write_report(args.out, lines, dict(results=results))
    elif args.bench == "speed":
        lines, results = speed_report(seconds=args.seconds, repeats=args.repeats, data_dir=args.data_dir,
                                      echo=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
        write_report(args.out, lines, dict(results=results))
    else:
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
                     f"(after {min(result['epoch'], result['recipe']['epochs']):g} of {result['recipe']['epochs']:g} "
                     f"epochs of the {result['recipe_name']} recipe, {100 * result['test_acc']:.2f} %, "
                     f"batch {result['recipe']['batch_size']}, lr {result['recipe']['lr']}) on {result['data_source']}."]
        write_report(args.out, lines, dict(result=result))


def _cmd_make_dataset(args: argparse.Namespace) -> None:
    manifest = make_signs_dataset(args.dir, SignsConfig(**values_from_args(SignsConfig, args)), echo=_note)
    rec = " and train/test .lst/.rec/.idx" if manifest["rec"] else ""
    print(f"{args.dir}: {len(manifest['classes'])} classes, {manifest['train_per_class']} train and "
          f"{manifest['test_per_class']} test images each (train/, test/{rec}); "
          f"train with --dataset folder:{args.dir}")


COMMANDS: Dict[str, Callable[[argparse.Namespace], None]] = {
    "launch": _cmd_launch, "train": _cmd_train, "train-symbol": _cmd_train_symbol, "evaluate": _cmd_evaluate,
    "visualize": _cmd_visualize, "export-onnx": _cmd_export_onnx, "predict": _cmd_predict, "serve": _cmd_serve,
    "models": _cmd_models, "bench": _cmd_bench, "make-dataset": _cmd_make_dataset}
