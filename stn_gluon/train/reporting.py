"""Run records shared by the Gluon and Module trainers: history, metrics, summary lines."""
import csv
import dataclasses
import io
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping, NoReturn, Optional, Sequence

import mxnet as mx

from .._runtime.errors import CheckpointError, StnGluonError
from .._runtime.files import atomic_write_text, write_json
from .._runtime.threads import check_threads, describe_threads, thread_report

if TYPE_CHECKING:
    from ..nn.explain import ExplainedBatch

__all__ = ["EpochRecord", "History", "RunRecorder", "test_line", "write_metrics", "machine_info",
           "check_recipe", "write_report", "run_script"]

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                  "seconds", "train_images_per_sec"]


def EpochRecord(epoch: int, lr: float, train_loss: float, train_acc: float, test_loss: float, test_acc: float,
                seconds: float, images_per_sec: float) -> Dict[str, Any]:
    """One row of the history, as a plain JSON-able dict."""
    return dict(epoch=int(epoch), lr=float(lr), train_loss=float(train_loss),
                train_acc=float(train_acc), test_loss=float(test_loss), test_acc=float(test_acc),
                seconds=float(seconds), train_images_per_sec=float(images_per_sec))


class History:
    """The per-epoch records of a run; written as ``history.csv``."""

    def __init__(self, records: Optional[Iterable[Mapping[str, Any]]] = None) -> None:
        self.records: List[Dict[str, Any]] = [dict(r) for r in (records or [])]

    def append(self, record: Dict[str, Any]) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.records)

    @property
    def last(self) -> Optional[Dict[str, Any]]:
        return self.records[-1] if self.records else None

    def column(self, name: str) -> List[Any]:
        return [r[name] for r in self.records]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in self.records:
            writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                             for k in HISTORY_FIELDS})
        return buf.getvalue()

    def save(self, path: str) -> None:
        atomic_write_text(path, self.to_csv())



def test_line(loss: float, correct: int, total: int, split: str = "Test") -> str:
    """The tutorial's summary line: ``Test set: Average loss: 0.0346, Accuracy: 9892/10000 (98.92%)``
    (``Validation set: ...`` for ``split="Validation"``)."""
    return (f"{split} set: Average loss: {loss:.4f}, Accuracy: {correct}/{total} "
            f"({100.0 * correct / max(total, 1):.2f}%)")


def machine_info() -> Dict[str, Any]:
    return dict(python=platform.python_version(), mxnet=mx.__version__,
                machine=platform.machine(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"))


def write_metrics(path: str, history: History, test_loss: float, test_correct: int, test_total: int,
                  **extra: Any) -> Dict[str, Any]:
    """Write ``metrics.json``: final test numbers, totals over the run, and ``extra`` fields.

    The best per-epoch accuracy is ``best_test_accuracy``, or ``best_val_accuracy`` where the epochs were
    evaluated on a validation split (``extra["epoch_evaluation"] == "val"``)."""
    records = history.records
    seconds = sum(r["seconds"] for r in records)
    split = "val" if extra.get("epoch_evaluation") == "val" else "test"
    metrics = dict(
        test_accuracy=test_correct / max(test_total, 1), test_loss=float(test_loss),
        test_correct=int(test_correct), test_total=int(test_total),
        **{f"best_{split}_accuracy": max((r["test_acc"] for r in records if r["test_acc"] == r["test_acc"]),
                                         default=None)},
        epochs=len(records), train_seconds=seconds,
        train_images_per_sec=(sum(r["train_images_per_sec"] * r["seconds"] for r in records)
                              / seconds if seconds else None),
        written=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine_info())
    metrics.update(extra)
    write_json(path, metrics)
    return metrics



def check_recipe(diffs: Sequence[str], path: str) -> None:
    """Refuse to resume a checkpoint made with other settings, listing ``diffs``
    (from :meth:`~stn_gluon.train.gluon.TrainConfig.recipe_differences`)."""
    if diffs:
        raise CheckpointError(f"checkpoint {path} was made with a different recipe "
                              f"({'; '.join(diffs)}); resume with the same flags")


class RunRecorder:
    """What both trainers (Gluon and Module) do around their loops.

    Per epoch: append to the history, print the epoch and ``Test set:`` lines,
    rewrite ``history.csv``. At the end: ``metrics.json``, ``curves.png``,
    ``stn_grid.png`` and the closing lines.
    """

    # cfg: a resolved TrainConfig (save_dir set); Any, as TrainConfig.save_dir is Optional[str].
    # eval_name: the split evaluated after each epoch, as the lines name it ("Test", "Validation").
    def __init__(self, cfg: Any, dataset: Any, trainer_name: str, context: str,
                 echo: Callable[[str], None] = print, history: Optional[History] = None,
                 eval_name: str = "Test") -> None:
        self.cfg, self.dataset, self.trainer_name = cfg, dataset, trainer_name
        self.context, self.echo, self.eval_name = context, echo, eval_name
        self.history = history or History()

    def start(self, resumed_from: Optional[str] = None, resumed_epoch: int = 0) -> None:
        cfg = self.cfg
        if resumed_from:
            self.echo(f"Resumed from {resumed_from} after epoch {resumed_epoch}")
        self.echo(f"Training {cfg.model} ({self.trainer_name}) on {self.dataset.describe()} | ctx {self.context} | "
                  f"{cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} ({cfg.lr_mode})")
        self.echo(describe_threads())
        check_threads()  # one line where OMP_NUM_THREADS is bad (more threads than cores, not a number)

    def end_epoch(self, epoch: int, lr: float, train_loss: float, train_acc: float, images: int,
                  train_seconds: float, epoch_seconds: float, test_loss: float, test_correct: int,
                  test_total: int) -> Dict[str, Any]:
        """Record epoch ``epoch`` (1-based); returns the record. ``test_total`` 0: not tested (NaN test numbers)."""
        record = EpochRecord(epoch, lr, train_loss, train_acc, test_loss,
                             test_correct / test_total if test_total else float("nan"),
                             epoch_seconds, images / max(train_seconds, 1e-9))
        self.history.append(record)
        self.echo(f"Epoch {epoch}/{self.cfg.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} "
                  f"| {record['train_images_per_sec']:.0f} images/s | lr {lr:.4g}")
        if test_total:
            self.echo(test_line(test_loss, test_correct, test_total, self.eval_name))
        self.history.save(os.path.join(self.cfg.save_dir, "history.csv"))
        return record

    def finish(self, test_loss: float, test_correct: int, test_total: int, model_files: List[str],
               stn_sample: Optional["ExplainedBatch"] = None, **extra: Any) -> Dict[str, Any]:
        """Write metrics, curves and (given ``stn_sample``, an :class:`~stn_gluon.nn.explain.ExplainedBatch`)
        the STN grid: test inputs with the sampled region outlined, beside the outputs with the predicted class.
        ``extra["evaluated_on"] == "val"``: the final numbers are the validation split's (the data has no test
        split), and the closing line says so."""
        from .plots import plot_curves, plot_explained  # lazy: matplotlib, for the lead worker's end of a run only

        save_dir = self.cfg.save_dir
        self.history.save(os.path.join(save_dir, "history.csv"))
        metrics = write_metrics(
            os.path.join(save_dir, "metrics.json"), self.history, test_loss, test_correct, test_total,
            trainer=self.trainer_name, model=self.cfg.model, context=self.context,
            data_source=self.dataset.source, train_size=len(self.dataset.train_labels),
            config=dataclasses.asdict(self.cfg), model_files=model_files, threads=thread_report(), **extra)
        plot_curves(self.history, os.path.join(save_dir, "curves.png"),
                    title=f"{self.cfg.model} ({self.trainer_name}) on {getattr(self.cfg, 'dataset', 'mnist')}",
                    evaluated=self.eval_name.lower())
        written = [os.path.basename(f) for f in model_files] + ["metrics.json", "history.csv", "curves.png"]
        if stn_sample is not None:
            plot_explained(stn_sample, os.path.join(save_dir, "stn_grid.png"), title="What the STN does")
            written.append("stn_grid.png")
        final = "Validation" if extra.get("evaluated_on") == "val" else "Test"
        self.echo(f"Final {test_line(test_loss, test_correct, test_total, final)}")
        self.echo(describe_threads(metrics["threads"]))
        self.echo(f"Wrote {save_dir}: {', '.join(written)}")
        return metrics


def write_report(out_dir: str, lines: Sequence[str], payload: Mapping[str, Any]) -> None:
    """A benchmark's results: ``results.md`` (``lines``) and ``results.json`` (``payload`` + machine)."""
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "results.md"), "\n".join(lines) + "\n")
    write_json(os.path.join(out_dir, "results.json"), dict(payload, machine=machine_info()))
    print("\n".join(lines))


def run_script(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a script's ``main()``: its return code, or one ``error:`` line and status 2 for bad input."""
    try:
        sys.exit(main())
    except StnGluonError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
