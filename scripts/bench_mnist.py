#!/usr/bin/env python
"""Accuracy benchmark: STNNet and its baseline, Gluon and Module trainers, default recipe.

Trains each (trainer, model) pair with the default flags, one after the other
on this machine, and writes ``results.md`` and ``results.json`` in ``--out``.
Point ``--data-dir`` or ``$STN_GLUON_DATA`` at the full MNIST; on the embedded
sample the numbers are not comparable.

    STN_GLUON_DATA=../shared/data/mnist python scripts/bench_mnist.py --out runs/bench
"""
import argparse
import os

from stn_gluon._runtime.errors import StnGluonError
from stn_gluon._runtime.flags import add_flags, values_from_args
from stn_gluon.train.recipes import TrainConfig, recipe_notes
from stn_gluon.train.reporting import machine_info, run_script, write_report
from stn_gluon.train.gluon import fit


def _runs(text):
    pairs = []
    for item in text.split(","):
        trainer, _, model = item.partition(":")
        if trainer not in ("gluon", "module") or model not in ("stn_lenet", "lenet"):
            raise StnGluonError(f"--runs {item!r}: expected TRAINER:MODEL with gluon|module and stn_lenet|lenet")
        pairs.append((trainer, model))
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--runs", default="gluon:stn_lenet,gluon:lenet,module:stn_lenet",
                        help="comma-separated TRAINER:MODEL pairs")
    add_flags(parser, TrainConfig, only=("recipe", "epochs", "seed", "ctx", "data_dir"), default_notes=recipe_notes)
    args = parser.parse_args(argv)
    values = values_from_args(TrainConfig, args)
    recipe = values.pop("recipe", "default")
    rows = []
    for trainer, model in _runs(args.runs):
        cfg = TrainConfig.from_recipe(recipe, **dict(values, model=model, progress=False,
                                                     save_dir=os.path.join(args.out, f"{trainer}_{model}")))
        if trainer == "gluon":
            m = fit(cfg)
        else:
            from stn_gluon.train.module import fit_module
            m = fit_module(cfg)
        rows.append(dict(trainer=trainer, model=model, test_accuracy=m["test_accuracy"],
                         best_test_accuracy=m["best_test_accuracy"], test_loss=m["test_loss"], epochs=m["epochs"],
                         train_seconds=m["train_seconds"], train_images_per_sec=m["train_images_per_sec"],
                         data_source=m["data_source"], save_dir=cfg.save_dir))
    lines = ["| trainer | model | test accuracy (final) | best epoch | test loss | epochs | train time | "
             "train images/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['trainer']} | {r['model']} | {100 * r['test_accuracy']:.2f} % | "
                     f"{100 * r['best_test_accuracy']:.2f} % | {r['test_loss']:.4f} | {r['epochs']} | "
                     f"{r['train_seconds'] / 60:.1f} min | {r['train_images_per_sec']:.0f} |")
    info = machine_info()
    lines += ["", f"Data: {rows[0]['data_source']}. Machine: {info['cpu_count']} CPUs ({info['processor']}), "
                  f"Python {info['python']}, MXNet {info['mxnet']}, OMP_NUM_THREADS={info['omp_num_threads']}."]
    write_report(args.out, lines, dict(rows=rows, recipe=cfg.recipe_fields()))
    return 0


if __name__ == "__main__":
    run_script(main)
