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
from typing import Optional

from ..data.distortions import DATASETS, get_dataset_spec, load_dataset
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


def _parse_list(text, allowed, what):
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise StnGluonError(f"--{what}: {', '.join(bad) or 'nothing given'} not in {', '.join(allowed)}")
    return items


def _subset(dataset, train_size, test_size):
    from ..data.mnist import DigitDataset

    if not train_size and not test_size:
        return dataset
    tr = slice(None, train_size or None)
    te = slice(None, test_size or None)
    return DigitDataset(dataset.train_images[tr], dataset.train_labels[tr], dataset.test_images[te],
                        dataset.test_labels[te], source=dataset.source)


def _config(name, model, bench, epochs):
    spec = dataset_models(name)
    # the architecture spelled out, so that a finished run is reused only if it is the same net
    shape = (dict(target_size=spec.baseline_target) if model == "cnn" else
             dict(target_size=spec.stn_target, loc_pool=spec.loc_pool, supersample=spec.supersample))
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


def _finished(cfg):
    path = os.path.join(cfg.save_dir, "metrics.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    same = not cfg.recipe_differences(metrics.get("config", {}))
    return metrics if same and metrics.get("epochs") == cfg.epochs else None


def _row(name, model, cfg, metrics, train_size):
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


def results_table(rows):
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
            paper = PAPER_ERRORS.get(name, {})
            paper_txt = (f"{paper[model]:.1f} / {paper['cnn']:.1f}" if model in paper else "")
            lines.append(f"| {name} | {cnn_err} | {model} | {r['test_error_pct']:.2f} | {delta} | {paper_txt} |")
    return lines


def _write_results(out, rows, meta):
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


def _figure(out, name, dataset, models, count=12):
    """``<out>/<name>.png``: ``count`` test inputs above each trained ST-CNN's output for them."""
    import mxnet as mx

    from ..data.mnist import normalize
    from ..export.saved import load_model
    from ..train.gluon import stn_batch
    from ..train.plots import plot_stn_comparison

    outputs, meta = {}, None
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


def spec_limited(name, train_size):
    """Whether the dataset itself (not ``--train-size``) holds fewer training images than MNIST."""
    return train_size is None and get_dataset_spec(name).max_train is not None


def run_distortion_bench(bench: Optional[DistortionBenchConfig] = None, echo=print):
    """Train the benchmark's runs (skipping finished ones) and write its tables and figures.

    bench.datasets / bench.models: comma lists (default: every dataset, each
    with its :data:`DEFAULT_MODELS`); bench.epochs: the budget of every run;
    train_size / test_size: use only the first images of each split (quick
    looks). Returns the list of result rows.
    """
    bench = bench or DistortionBenchConfig()
    validate_fields(bench)
    datasets, models, out = bench.datasets, bench.models, bench.out
    epochs, batch_size, lr, seed = bench.epochs, bench.batch_size, bench.lr, bench.seed
    dropout, loc_lr_mult, train_size, test_size = bench.dropout, bench.loc_lr_mult, bench.train_size, bench.test_size
    from ..data.mnist import load_mnist
    from ..train.gluon import fit

    names = _parse_list(datasets, [d for d, spec in DATASETS.items() if spec.distorted], "datasets") if datasets else \
        list(DEFAULT_MODELS)
    wanted = _parse_list(models, MODELS, "models") if models else None
    os.makedirs(out, exist_ok=True)
    mnist = load_mnist(bench.data_dir)
    budget = (f"Budget: {epochs} epochs of 60,000 images per run (noisy128, 20,000 images: {3 * epochs} epochs, "
              f"the same number of images seen), batch {batch_size}, SGD momentum lr {lr} with 1 warm-up epoch "
              f"and cosine decay, dropout {dropout}, localization lr x{loc_lr_mult}, no augmentation, seed {seed}; "
              f"MNIST from {mnist.source}.")
    meta = dict(budget=budget, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, dropout=dropout,
                loc_lr_mult=loc_lr_mult,
                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    rows = []
    previous = os.path.join(out, "results.json")
    if os.path.exists(previous):  # keep rows of runs this invocation does not touch
        try:
            with open(previous) as f:
                rows = json.load(f).get("rows", [])
        except (OSError, ValueError):
            rows = []
    for name in names:
        dataset = _subset(load_dataset(name, mnist=mnist), train_size, test_size)
        n_train = len(dataset.train_labels)
        models_here = wanted or list(DEFAULT_MODELS[name])
        # the budget is in images seen: a smaller training set gets proportionally more epochs
        run_epochs = max(1, int(round(epochs * FULL_TRAIN / n_train))) if spec_limited(name, train_size) else epochs
        for model in models_here:
            cfg = _config(name, model, bench, run_epochs)
            metrics = _finished(cfg)
            if metrics is None:
                echo(f"== {name} / {model}: {run_epochs} epochs on {n_train:,} images")
                metrics = fit(cfg, dataset=dataset, echo=echo)
            else:
                echo(f"== {name} / {model}: done before ({cfg.save_dir}), reusing it")
            rows = [r for r in rows if (r["dataset"], r["model"]) != (name, model)]
            rows.append(_row(name, model, cfg, metrics, n_train))
            rows.sort(key=lambda r: (list(DEFAULT_MODELS).index(r["dataset"]), MODELS.index(r["model"])))
            _write_results(out, rows, meta)
        figure = _figure(out, name, dataset, models_here)
        if figure:
            echo(f"Wrote {figure}")
    lines = _write_results(out, rows, meta)
    echo("\n".join(lines))
    return rows
