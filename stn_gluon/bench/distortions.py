"""``stn-gluon bench distortions``: a CNN baseline against ST-CNNs on every distorted-MNIST set.

Each (dataset, model) pair is one ordinary training run (:func:`stn_gluon.train.gluon.fit`)
in ``<out>/<dataset>/<model>/``, with the same recipe and budget for every model
of a dataset. A finished run (its ``metrics.json``, same recipe) is reused, an
unfinished one resumes from its checkpoint, so the benchmark can be stopped and
restarted, or run a subset at a time. After every run it rewrites
``results.csv`` / ``results.md`` / ``results.json`` and, per dataset,
``<dataset>.png``: test inputs above what each ST-CNN made of them.
"""
import csv
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import mxnet as mx

from ..data.distortions import DATASETS, get_dataset_spec, load_dataset
from ..data.mnist import DigitDataset, load_mnist, normalize
from ..export.saved import load_model
from ..train.recipes import PLAIN_STN, TrainConfig, dataset_models
from .._runtime.errors import StnGluonError
from .._runtime.flags import option, validate_fields
from .._runtime.files import atomic_write_text, write_json

__all__ = ["PAPER_ERRORS", "DEFAULT_MODELS", "DistortionBenchConfig", "run_distortion_bench", "results_table"]

#: Test error (%) in Jaderberg et al. (2015), Table 1 (left): CNN and ST-CNN Aff / Proj / TPS;
#: the cluttered 60x60 row is its ST-CNN (affine) against its CNN.
PAPER_ERRORS = {
    "rotated": dict(cnn=1.2, affine=0.7, projective=0.8, tps=0.7),
    "rts": dict(cnn=0.8, affine=0.5, projective=0.6, tps=0.5),
    "projective": dict(cnn=1.5, affine=0.8, projective=0.8, tps=0.8),
    "elastic": dict(cnn=1.4, affine=1.2, projective=1.3, tps=1.1),
    "cluttered": dict(cnn=3.5, affine=1.7),
}
DEFAULT_MODELS = {
    "rotated": ("cnn", "affine", "projective", "tps"),
    "rts": ("cnn", "affine", "projective", "tps"),
    "projective": ("cnn", "affine", "projective", "tps"),
    "elastic": ("cnn", "affine", "projective", "tps"),
    "cluttered": ("cnn", "affine", "attention"),
    "noisy128": ("cnn", "attention"),
}
MODELS = ("cnn", "affine", "attention", "window", "projective", "tps")
COLUMNS = ("dataset", "model", "transform", "test_error_pct", "best_error_pct", "paper_error_pct",
           "epochs", "train_size", "minutes", "train_images_per_sec", "stn_target", "baseline_target")


@dataclass
class DistortionBenchConfig:
    """The benchmark's settings; the ``bench distortions`` flags are these fields.

    Its recipe differs from ``stn-gluon train``'s in two ways: no dropout (with
    dropout 0.3 the nets underfit in a few epochs: 8.1 % error on a 2-epoch
    pilot, rotated, 30,000 images, against 5.9 % with no dropout and the
    localization net at 1.0x) and one plain cosine cycle. The trainer's lr 0.02
    and localization lr x0.1 stay: at lr 0.04 (x0.3) the RTS STNs threw theta
    off the canvas in the first epoch and never recovered (88.6 % error on the
    same kind of pilot).
    """
    datasets: Optional[str] = option(None, "comma list (default: every distorted dataset)")
    models: Optional[str] = option(None, f"comma list of {', '.join(MODELS)} (default: per dataset, as in the paper)")
    epochs: int = option(6, "the budget: epochs of 60,000 images for every run", minimum=1)
    batch_size: int = option(64, "images per training step", minimum=1)
    lr: float = option(0.02, "peak learning rate", minimum=0, exclusive_minimum=True)
    dropout: float = option(0.0, "dropout of the LeNet body", minimum=0, maximum=0.99)
    loc_lr_mult: float = option(0.1, "learning-rate multiplier of the localization net", minimum=0)
    seed: int = option(42, "seed of every run")
    train_size: Optional[int] = option(None, "use the first N training images only", minimum=1)
    test_size: Optional[int] = option(None, "use the first N test images only", minimum=1)
    data_dir: Optional[str] = option(None, "folder with the MNIST files the datasets are made from")
    out: str = option("runs/bench_distortions", "where the runs, tables and figures go")
    progress: bool = option(False, "progress bars")


def _parse_list(text: str, allowed: Sequence[str], what: str) -> List[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise StnGluonError(f"--{what}: {', '.join(bad) or 'nothing given'} not in {', '.join(allowed)}")
    return items


def _subset(dataset: Any, train_size: Optional[int], test_size: Optional[int]) -> Any:
    if not train_size and not test_size:
        return dataset
    tr = slice(None, train_size or None)
    te = slice(None, test_size or None)
    return DigitDataset(dataset.train_images[tr], dataset.train_labels[tr], dataset.test_images[te],
                        dataset.test_labels[te], source=dataset.source)


def _config(name: str, model: str, bench: DistortionBenchConfig, epochs: int) -> TrainConfig:
    spec = dataset_models(name)
    # the architecture spelled out, so that a finished run is reused only if it is the same net
    shape: Dict[str, Any] = (dict(target_size=spec.baseline_target) if model == "cnn" else
                             dict(target_size=spec.stn_target, loc_pool=spec.loc_pool,
                                  supersample=spec.supersample))
    stn = spec.stn_defaults(model)
    if model != "cnn" and stn != PLAIN_STN:
        # spelled out only where the dataset departs from the plain net (and the prior only where it
        # has one), so that finished runs made before these fields existed keep their identity
        shape.update(localization=stn["localization"], init_scale=stn["init_scale"])
        if stn["brightness_prior"]:
            shape["brightness_prior"] = stn["brightness_prior"]
    return TrainConfig(
        model="lenet" if model == "cnn" else "stn_lenet",
        transform="affine" if model == "cnn" else model, **shape,
        dataset=name, epochs=epochs, batch_size=bench.batch_size, lr=bench.lr, seed=bench.seed, lr_mode="cosine",
        warmup_epochs=1.0, first_cycle_epochs=0.0, dropout=bench.dropout, loc_lr_mult=bench.loc_lr_mult,
        augment=False,  # the distortion is the dataset's: no extra augmentation for either model
        save_dir=os.path.join(bench.out, name, model), resume="auto", progress=bench.progress,
        data_dir=bench.data_dir)


def _finished(cfg: TrainConfig) -> Optional[Dict[str, Any]]:
    path = os.path.join(cfg.save_dir or "", "metrics.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    same = not cfg.recipe_differences(metrics.get("config", {}))
    return metrics if same and metrics.get("epochs") == cfg.epochs else None


def _row(name: str, model: str, cfg: TrainConfig, metrics: Dict[str, Any], train_size: int) -> Dict[str, Any]:
    spec = dataset_models(name)
    error = 100.0 * (1.0 - metrics["test_accuracy"])
    best = metrics.get("best_test_accuracy")
    return dict(dataset=name, model=model, transform=None if model == "cnn" else model,
                test_error_pct=round(error, 2), best_error_pct=round(100.0 * (1 - best), 2) if best else None,
                paper_error_pct=PAPER_ERRORS.get(name, {}).get(model),
                epochs=metrics["epochs"], train_size=train_size,
                minutes=round(metrics["train_seconds"] / 60.0, 2),
                train_images_per_sec=round(metrics["train_images_per_sec"] or 0.0),
                stn_target=None if model == "cnn" else spec.stn_target,
                baseline_target=spec.baseline_target if model == "cnn" else None)


def results_table(rows: List[Dict[str, Any]]) -> List[str]:
    """Markdown lines: the per-run table, then per dataset the ST-CNNs against the CNN."""
    lines = ["| dataset | model | test error % | best epoch error % | paper error % | epochs | train images | "
             "minutes | train images/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = "" if r["paper_error_pct"] is None else f"{r['paper_error_pct']:.1f}"
        best = "" if r["best_error_pct"] is None else f"{r['best_error_pct']:.2f}"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['test_error_pct']:.2f} | {best} | {paper} | "
                     f"{r['epochs']} | {r['train_size']:,} | {r['minutes']:.1f} | {r['train_images_per_sec']:,} |")
    lines += ["", "| dataset | CNN error % | ST-CNN | ST-CNN error % | vs our CNN | paper: ST-CNN / CNN |",
              "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by_model = {r["model"]: r for r in rows if r["dataset"] == name}
        cnn = by_model.get("cnn")
        for model, r in by_model.items():
            if model == "cnn":
                continue
            cnn_err = "" if cnn is None else f"{cnn['test_error_pct']:.2f}"
            delta = ""
            if cnn is not None:
                d = cnn["test_error_pct"] - r["test_error_pct"]
                rel = d / cnn["test_error_pct"] if cnn["test_error_pct"] else 0.0
                delta = (f"{d:.2f} points lower ({100 * rel:.0f} % fewer errors)" if d > 0 else
                         f"{-d:.2f} points HIGHER" if d < 0 else "equal")
            errors = PAPER_ERRORS.get(name, {})
            paper_txt = (f"{errors[model]:.1f} / {errors['cnn']:.1f}" if model in errors else "")
            lines.append(f"| {name} | {cnn_err} | {model} | {r['test_error_pct']:.2f} | {delta} | {paper_txt} |")
    return lines


def _write_results(out: str, rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> List[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    atomic_write_text(os.path.join(out, "results.csv"), buf.getvalue())
    lines = ["## Distorted MNIST: CNN vs ST-CNN", "", meta["budget"], ""] + results_table(rows)
    atomic_write_text(os.path.join(out, "results.md"), "\n".join(lines) + "\n")
    write_json(os.path.join(out, "results.json"), dict(meta, rows=rows))
    return lines


def _figure(out: str, name: str, dataset: Any, models: Sequence[str], count: int = 12) -> Optional[str]:
    """``<out>/<name>.png``: ``count`` test inputs above each trained ST-CNN's output for them."""
    from ..train.gluon import stn_batch  # lazy: the CLI's parser imports this module for its config alone
    from ..train.plots import plot_stn_comparison  # lazy: matplotlib, when the bench draws

    outputs: Dict[str, Any] = {}
    meta: Dict[str, Any] = {}
    for model in models:
        if model == "cnn":
            continue
        loaded = load_model(os.path.join(out, name, model))
        meta = loaded.meta
        x = normalize(dataset.test_images[:count], meta["mean"], meta["std"])
        outputs[f"ST-CNN {model}"] = stn_batch(loaded.stn, mx.nd.array(x))
    if not outputs:
        return None
    path = os.path.join(out, f"{name}.png")
    plot_stn_comparison(x, outputs, path, meta["mean"], meta["std"],
                        title=f"{name}: test inputs (top) and what each spatial transformer makes of them")
    return path


FULL_TRAIN = 60000


def spec_limited(name: str, train_size: Optional[int]) -> bool:
    """Whether the dataset itself (not ``--train-size``) holds fewer training images than MNIST."""
    return train_size is None and get_dataset_spec(name).max_train is not None


def run_distortion_bench(bench: Optional[DistortionBenchConfig] = None,
                         echo: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Train the benchmark's runs (skipping finished ones) and write its tables and figures.

    bench.datasets / bench.models: comma lists (default: every dataset, each
    with its :data:`DEFAULT_MODELS`); bench.epochs: the budget of every run;
    train_size / test_size: use only the first images of each split (quick
    looks). Returns the list of result rows.
    """
    bench = bench or DistortionBenchConfig()
    validate_fields(bench)
    names = _parse_list(bench.datasets, [d for d, spec in DATASETS.items() if spec.distorted], "datasets") \
        if bench.datasets else list(DEFAULT_MODELS)
    wanted = _parse_list(bench.models, MODELS, "models") if bench.models else None
    os.makedirs(bench.out, exist_ok=True)
    mnist = load_mnist(bench.data_dir)
    meta = _meta(bench, mnist.source)
    rows = _previous_rows(bench.out)
    for name in names:
        dataset = _subset(load_dataset(name, mnist=mnist), bench.train_size, bench.test_size)
        models_here = wanted or list(DEFAULT_MODELS[name])
        for model in models_here:
            row = _run(name, model, bench, dataset, echo)
            rows = [r for r in rows if (r["dataset"], r["model"]) != (name, model)] + [row]
            rows.sort(key=lambda r: (list(DEFAULT_MODELS).index(r["dataset"]), MODELS.index(r["model"])))
            _write_results(bench.out, rows, meta)
        figure = _figure(bench.out, name, dataset, models_here)
        if figure:
            echo(f"Wrote {figure}")
    lines = _write_results(bench.out, rows, meta)
    echo("\n".join(lines))
    return rows


def _meta(bench: DistortionBenchConfig, source: str) -> Dict[str, Any]:
    """``results.json``'s description of the budget (``budget``: in words, for ``results.md``)."""
    epochs = bench.epochs
    budget = (f"Budget: {epochs} epochs of 60,000 images per run (noisy128, 20,000 images: {3 * epochs} epochs, "
              f"the same number of images seen), batch {bench.batch_size}, SGD momentum lr {bench.lr} with 1 "
              f"warm-up epoch and cosine decay, dropout {bench.dropout}, localization lr x{bench.loc_lr_mult}, "
              f"no augmentation, seed {bench.seed}; MNIST from {source}.")
    return dict(budget=budget, epochs=epochs, batch_size=bench.batch_size, lr=bench.lr, seed=bench.seed,
                dropout=bench.dropout, loc_lr_mult=bench.loc_lr_mult, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _previous_rows(out: str) -> List[Dict[str, Any]]:
    """The rows of an earlier ``results.json`` in ``out``: runs this invocation does not touch are kept."""
    previous = os.path.join(out, "results.json")
    if not os.path.exists(previous):
        return []
    try:
        with open(previous) as f:
            return list(json.load(f).get("rows", []))
    except (OSError, ValueError):
        return []


def _run(name: str, model: str, bench: DistortionBenchConfig, dataset: Any,
         echo: Callable[[str], None]) -> Dict[str, Any]:
    """Train (or reuse, when finished before with the same recipe) one (dataset, model) run; its result row."""
    from ..train.gluon import fit  # lazy: the CLI's parser imports this module for its config alone

    n_train = len(dataset.train_labels)
    # the budget is in images seen: a smaller training set gets proportionally more epochs
    epochs = bench.epochs
    run_epochs = max(1, int(round(epochs * FULL_TRAIN / n_train))) if spec_limited(name, bench.train_size) else epochs
    cfg = _config(name, model, bench, run_epochs)
    metrics = _finished(cfg)
    if metrics is None:
        echo(f"== {name} / {model}: {run_epochs} epochs on {n_train:,} images")
        metrics = fit(cfg, dataset=dataset, echo=echo)
    else:
        echo(f"== {name} / {model}: done before ({cfg.save_dir}), reusing it")
    return _row(name, model, cfg, metrics, n_train)
