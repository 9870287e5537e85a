#!/usr/bin/env python
"""Accuracy benchmark: STNNet and the same net without STN, default recipe, full MNIST.

Trains both models with ``stn-gluon train``'s defaults (plus any extra flags
given), one after the other on this machine, and writes ``results.md`` and
``results.json`` in ``--out``. Point ``--data-dir`` or ``$STN_GLUON_DATA`` at
the full MNIST; on the embedded sample the numbers are not comparable.

    STN_GLUON_DATA=../shared/data/mnist python scripts/bench_mnist.py --out runs/bench
"""
import argparse
import dataclasses
import os
import sys

from stn_gluon.errors import StnGluonError
from stn_gluon.io import atomic_write_text, write_json
from stn_gluon.reporting import machine_info
from stn_gluon.training import TrainConfig, fit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--models", default="stn_lenet,lenet")
    parser.add_argument("--ctx", default="cpu")
    args = parser.parse_args(argv)
    rows = []
    for model in args.models.split(","):
        cfg = TrainConfig(model=model, epochs=args.epochs, data_dir=args.data_dir, ctx=args.ctx,
                          save_dir=os.path.join(args.out, model), progress=False)
        m = fit(cfg)
        rows.append(dict(model=model, test_accuracy=m["test_accuracy"], best_test_accuracy=m["best_test_accuracy"],
                         test_loss=m["test_loss"], epochs=m["epochs"], train_seconds=m["train_seconds"],
                         train_images_per_sec=m["train_images_per_sec"], data_source=m["data_source"],
                         config=dataclasses.asdict(cfg)))
    lines = ["| model | test accuracy | best epoch accuracy | test loss | epochs | train time | train images/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['test_accuracy']:.2f} % | {100 * r['best_test_accuracy']:.2f} % | "
                     f"{r['test_loss']:.4f} | {r['epochs']} | {r['train_seconds'] / 60:.1f} min | "
                     f"{r['train_images_per_sec']:.0f} |")
    info = machine_info()
    lines.append("")
    lines.append(f"Data: {rows[0]['data_source']}. Machine: {info['cpu_count']} CPUs ({info['processor']}), "
                 f"Python {info['python']}, MXNet {info['mxnet']}.")
    atomic_write_text(os.path.join(args.out, "results.md"), "\n".join(lines) + "\n")
    write_json(os.path.join(args.out, "results.json"), dict(rows=rows, machine=info))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StnGluonError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
