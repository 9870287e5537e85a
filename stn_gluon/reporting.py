"""Run records shared by the Gluon and Module trainers: history, metrics, summary lines."""
import csv
import io
import json
import os
import platform
import time

import mxnet as mx

from .io import atomic_write_text, write_json

__all__ = ["EpochRecord", "History", "test_line", "write_metrics", "machine_info"]

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                  "seconds", "train_images_per_sec"]


def EpochRecord(epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds, images_per_sec):
    """One row of the history, as a plain JSON-able dict."""
    return dict(epoch=int(epoch), lr=float(lr), train_loss=float(train_loss),
                train_acc=float(train_acc), test_loss=float(test_loss), test_acc=float(test_acc),
                seconds=float(seconds), train_images_per_sec=float(images_per_sec))


class History:
    """The per-epoch records of a run; written as ``history.csv``."""

    def __init__(self, records=None):
        self.records = [dict(r) for r in (records or [])]

    def append(self, record):
        self.records.append(record)

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def last(self):
        return self.records[-1] if self.records else None

    def column(self, name):
        return [r[name] for r in self.records]

    def to_csv(self):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in self.records:
            writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                             for k in HISTORY_FIELDS})
        return buf.getvalue()

    def save(self, path):
        atomic_write_text(path, self.to_csv())

    @classmethod
    def load(cls, path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return cls([{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows])


def test_line(loss, correct, total):
    """The tutorial's summary line: ``Test set: Average loss: 0.0346, Accuracy: 9892/10000 (98.92%)``."""
    return (f"Test set: Average loss: {loss:.4f}, Accuracy: {correct}/{total} "
            f"({100.0 * correct / max(total, 1):.2f}%)")


def machine_info():
    return dict(python=platform.python_version(), mxnet=mx.__version__,
                machine=platform.machine(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"))


def write_metrics(path, history, test_loss, test_correct, test_total, **extra):
    """Write ``metrics.json``: final test numbers, totals over the run, and ``extra`` fields."""
    records = history.records
    seconds = sum(r["seconds"] for r in records)
    metrics = dict(
        test_accuracy=test_correct / max(test_total, 1), test_loss=float(test_loss),
        test_correct=int(test_correct), test_total=int(test_total),
        best_test_accuracy=max((r["test_acc"] for r in records), default=None),
        epochs=len(records), train_seconds=seconds,
        train_images_per_sec=(sum(r["train_images_per_sec"] * r["seconds"] for r in records)
                              / seconds if seconds else None),
        written=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine_info())
    metrics.update(extra)
    write_json(path, metrics)
    return metrics


def read_json(path):
    with open(path) as f:
        return json.load(f)
