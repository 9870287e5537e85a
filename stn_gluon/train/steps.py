"""The steps every training run takes, shared by the Gluon trainer and the Module trainer.

A run reads top-down in either trainer (:func:`stn_gluon.train.gluon.fit`,
:func:`stn_gluon.train.module.fit_module`)::

    run = start_run(cfg, dataset, echo)       # validate, join the workers, load and prepare the data
    net = <build the trainer's network>       # before anything is written: a net that cannot be built leaves no trace
    with open_save_dir(run) as previous:      # worker 0 creates the save dir (overwrite: the old run set aside)
        <restore a checkpoint, loop over the epochs, checkpointing each; then previous.discard()>
    identical = run.group.compare_weights(...)
    if not run.lead: return wait_for_lead(run, identical)
    metrics = <worker 0 exports and reports>
    release_workers(run)

Each helper returns what it made; none takes a callback, none changes the configuration (a
:class:`~stn_gluon.train.recipes.TrainConfig` is immutable: :func:`start_run` returns the run's own copy,
``save_dir`` resolved and ``workers`` set).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .._runtime.devices import format_ctx, parse_ctx
from .._runtime.errors import StnGluonError
from .._runtime.paths import writable_dir
from ..data import mnist as data_lib
from ..data.augment import Chain, ColorJitter
from ..data.dataset import spread_index
from ..data.sources import load_images, parse_spec, recorded_options
from ..data.streaming import make_batches
from ..nn.architecture import BACKGROUND
from ..nn.explain import ExplainedBatch, explain_batch
from .distributed import WorkerGroup, is_dist
from .recipes import TrainConfig, load_options
from .reporting import RunRecorder, test_line
from .runs import RunExistsError, SetAside, check_save_dir, describe_run, inspect_run, prepare_save_dir
from .schedule import epoch_lengths

__all__ = ["PreparedData", "Run", "start_run", "open_save_dir", "make_recorder", "optimizer_params",
           "nothing_to_resume", "resume_state", "final_results", "wait_for_lead", "distributed_info",
           "release_workers", "silent", "DROPOUT_RANK_STRIDE", "Echo", "TestResult"]

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
#: ``(loss, correct, total)`` of a test pass.
TestResult = Tuple[float, int, int]

#: Added to the dropout seed per worker rank (more than any run's epochs: no two (rank, epoch) share a seed).
DROPOUT_RANK_STRIDE = 100003


def silent(*_args: Any, **_kwargs: Any) -> None:
    """The echo of workers other than worker 0 (it reports for the job)."""


#: An evaluation batch: the largest divisor of the split's size up to this (no ragged batch; Module.score) ...
EVAL_BATCH = 500
#: ... where it is at least this, else EVAL_BATCH with a smaller last batch (a prime-sized split).
MIN_EVAL_BATCH = 100


def eval_batch_size(n: int) -> int:
    """The batch an evaluation of ``n`` images takes (see :data:`EVAL_BATCH`)."""
    best = max(d for d in range(1, min(EVAL_BATCH, n) + 1) if n % d == 0)
    return best if best >= MIN_EVAL_BATCH or n <= EVAL_BATCH else EVAL_BATCH


class PreparedData:
    """The arrays and batch iterators a training run needs, built once from an
    :class:`~stn_gluon.data.dataset.ImageDataset`.

    Images stay ``uint8 (N, C, H, W)`` (or on disk, streamed); batches are normalised with the dataset's mean and
    std as they are cut. ``eval``: the batches evaluated after each epoch, the validation split where the data
    has one, else the test split; ``test``: the final report's, the test split where there is one, else the
    validation split (``eval_split``/``test_split`` say which: ``"val"`` or ``"test"``). MNIST and its distorted
    sets have no validation split: both are the test split, as before.
    shard ``(rank, workers)``: this worker's slice of every global batch (and of its augmentation).
    """

    def __init__(self, cfg: TrainConfig, dataset: Any, shard: Tuple[int, int] = (0, 1)) -> None:
        self.dataset = dataset
        self.mean, self.std, self.digits = dataset.mean, dataset.std, bool(dataset.digits)
        self.train_pixels = data_lib.with_channel(dataset.train_images)
        self.input_shape: Tuple[int, ...] = tuple(self.train_pixels.shape[1:])
        self.num_classes = dataset.num_classes
        self.rank = shard[0]
        step = cfg.batch_size * shard[1]
        if len(self.train_pixels) < step:
            workers = f" x {shard[1]} workers" if shard[1] > 1 else ""
            raise StnGluonError(f"batch_size {cfg.batch_size}{workers} is larger than the training set "
                                f"({len(self.train_pixels)})", params=("batch_size",))
        self.workers = cfg.loader_workers
        self.train = make_batches(self.train_pixels, dataset.train_labels, cfg.batch_size, workers=self.workers,
                                  shuffle=True, seed=cfg.seed, last_batch="discard", shard=shard, mean=self.mean,
                                  std=self.std)
        self.eval_split = "val" if dataset.has_val else "test"
        self.test_split = "test" if dataset.has_test else "val"
        self.test_pixels, self.test_labels = self._split(self.test_split)
        self.test = self._batches(self.test_pixels, self.test_labels)
        self.eval = self.test if self.eval_split == self.test_split else self._batches(*self._split("val"))
        self.augment = self._augmentation(cfg, shard)

    def _split(self, name: str) -> Tuple[Any, np.ndarray]:
        d = self.dataset
        images, labels = (d.val_images, d.val_labels) if name == "val" else (d.test_images, d.test_labels)
        return data_lib.with_channel(images), np.asarray(labels)

    def _batches(self, pixels: Any, labels: np.ndarray) -> Any:
        return make_batches(pixels, labels, eval_batch_size(len(labels)), workers=self.workers, mean=self.mean,
                            std=self.std)

    def _augmentation(self, cfg: TrainConfig, shard: Tuple[int, int]) -> Any:
        """The training batches' augmentation: the random affine warp (its background: black for digits, the
        mean otherwise), then the colour jitter; ``None`` without either."""
        steps: List[Any] = []
        if cfg.augment:
            steps.append(data_lib.RandomAffine(fill=BACKGROUND if self.digits else 0.0, seed=cfg.seed, shard=shard))
        if cfg.color_jitter > 0:
            steps.append(ColorJitter(cfg.color_jitter, self.mean, self.std, seed=cfg.seed, shard=shard))
        return None if not steps else steps[0] if len(steps) == 1 else Chain(steps)

    @property
    def num_test(self) -> int:
        """Images of the final report's split."""
        return len(self.test_labels)

    @property
    def num_eval(self) -> int:
        """Images evaluated after each epoch."""
        return self.eval.num_samples

    def sample_index(self, count: int = 64) -> np.ndarray:
        """``count`` indices spread evenly over the final report's split (:func:`~stn_gluon.data.dataset.spread_index`)."""
        return spread_index(self.num_test, count)

    def test_sample(self, count: int = 64) -> np.ndarray:
        """``count`` images of the final report's split (:meth:`sample_index`), normalised:
        ``float32 (count, C, H, W)``."""
        return data_lib.normalize(self.test_pixels[self.sample_index(count)], self.mean, self.std)

    def explained_sample(self, model: Any, count: int = 64) -> Optional[ExplainedBatch]:
        """:meth:`test_sample`'s images through ``model`` (anything with ``net``, ``stn`` and ``meta``, as a
        :class:`~stn_gluon.export.saved.LoadedModel`), explained for ``stn_grid.png``; ``None`` without an STN."""
        if model.stn is None:
            return None
        return explain_batch(model, self.test_sample(count), np.asarray(self.test_labels)[self.sample_index(count)])

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Shuffle order, augmentation draws and dropout masks of epoch ``epoch`` (0-based).

        Dropout masks are drawn per worker (a seed per rank): the one thing a
        distributed run draws differently from one process.
        """
        self.train.set_epoch(epoch)
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        mx.random.seed(seed * 1000 + epoch + DROPOUT_RANK_STRIDE * self.rank)

    def model_meta(self, cfg: TrainConfig, source: str, **extra: Any) -> Dict[str, Any]:
        """The ``model.json`` beside an exported model: how to feed it (input shape, mean, std per the contract of
        :mod:`stn_gluon.data.normalization`), its class names and whether it is a digit model."""
        meta = dict(model=cfg.model, transform=cfg.transform if cfg.model.startswith("stn") else None,
                    dataset=cfg.dataset,
                    input_shape=list(self.input_shape), input_name="data",
                    mean=self.mean, std=self.std, classes=list(self.dataset.classes), digits=self.digits,
                    source=source, **extra)
        if parse_spec(cfg.dataset) is not None:  # images from disk: how to read them again (evaluate, int8)
            meta["data_options"] = recorded_options(load_options(cfg))
        if getattr(self.dataset, "class_folders", None):  # --class-names: the data's own names as well
            meta["class_folders"] = list(self.dataset.class_folders)
        return meta


@dataclass(frozen=True)
class Run:
    """One training run as this process sees it, once started (:func:`start_run`).

    cfg: the run's configuration (``save_dir`` resolved, ``workers`` set from the group). ctx_list: this
    process's devices. data: its shard of the data. group: the workers training together. echo: where this
    process reports (:func:`silent` on workers other than worker 0).
    """
    cfg: TrainConfig
    ctx_list: List[Any]
    data: PreparedData
    group: WorkerGroup
    echo: Echo

    @property
    def lead(self) -> bool:
        """Worker 0: the one that evaluates and writes every file of the run."""
        return self.group.is_lead

    @property
    def save_dir(self) -> str:
        """Where the run's files go (``cfg.save_dir``, resolved)."""
        assert self.cfg.save_dir is not None, "start_run resolves save_dir"
        return self.cfg.save_dir

    @property
    def context(self) -> str:
        """The devices as the run's files name them (``cpu:0``)."""
        return format_ctx(self.ctx_list)


def _check_save_dir(cfg: TrainConfig) -> None:
    assert cfg.save_dir is not None, "resolved first"
    writable_dir(cfg.save_dir, "save_dir")  # a folder, or one that can be made ...
    check_save_dir(cfg)  # ... and not a run nobody asked to replace


def start_run(cfg: TrainConfig, dataset: Any = None, echo: Echo = print) -> Run:
    """Validate ``cfg``, join the workers, load and prepare the data, seed the generators; writes nothing.

    dataset: a :class:`~stn_gluon.data.mnist.DigitDataset` (default: ``cfg.dataset`` loaded). In a
    distributed job (``cfg.kvstore`` ``dist_*``) this waits for every worker and prepares this worker's
    shard; only worker 0 checks the save dir (the others write nothing).
    """
    cfg = cfg.resolved().validate()
    ctx_list = parse_ctx(cfg.ctx)
    if not is_dist(cfg.kvstore):
        _check_save_dir(cfg)  # before the data loads
    group = WorkerGroup(cfg.kvstore, len(ctx_list))  # a dist store waits here for every worker and server
    cfg = dataclasses.replace(cfg, workers=group.num_workers)
    if group.dist and group.is_lead:
        _check_save_dir(cfg)
    if dataset is None:
        dataset = load_images(cfg.dataset, load_options(cfg), cfg.data_dir, download=cfg.download)
        for line in getattr(dataset, "notes", ()):
            (echo if group.is_lead else silent)(line)
    data = PreparedData(cfg, dataset, group.shard())
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    return Run(cfg, ctx_list, data, group, echo if group.is_lead else silent)


def open_save_dir(run: Run) -> SetAside:
    """Worker 0 creates the save dir (with ``overwrite``, first moving the old run's files aside); call it once
    the network is built, so that a network that cannot be built leaves no trace.

    Returns the files set aside (:class:`~stn_gluon.train.runs.SetAside`; nothing on the other workers): train
    inside ``with`` it and call its ``discard()`` after each checkpoint, so the old run is deleted once the new
    one has its first checkpoint, and a run that fails before that says where the old one is.
    """
    if run.lead:
        return prepare_save_dir(run.cfg)
    return SetAside()


def make_recorder(run: Run, trainer_name: str) -> RunRecorder:
    """The history, metrics and plots of ``run`` (they go through ``run.echo``)."""
    return RunRecorder(run.cfg, run.data.dataset, trainer_name, run.context, run.echo,
                       eval_name="Validation" if run.data.eval_split == "val" else "Test")


def optimizer_params(cfg: TrainConfig, lr_scheduler: Any, **extra: Any) -> Dict[str, Any]:
    """The optimizer's arguments for ``cfg``: weight decay, the schedule, momentum where the optimizer has one."""
    params = dict(wd=cfg.wd, lr_scheduler=lr_scheduler, **extra)
    if cfg.optimizer in ("sgd", "nag"):
        params["momentum"] = cfg.momentum
    return params


def nothing_to_resume(run: Run, what: str) -> None:
    """``resume="auto"`` found no ``what`` (a checkpoint) in the save dir: refused where the folder holds a run
    (it would be trained over), otherwise a warning, and the run starts from scratch."""
    there = inspect_run(run.save_dir)
    if there is not None:
        raise RunExistsError(f"{run.save_dir} holds {describe_run(there)} but no {what} to continue; replace it "
                             f"with overwrite or choose another save_dir", params=("overwrite", "save_dir"))
    log.warning("--resume: no %s in %s yet, starting from scratch", what, run.save_dir)


def resume_state(run: Run, recorder: RunRecorder) -> Dict[str, Any]:
    """What a checkpoint records beside the weights to continue the run: its history, recipe and data."""
    return dict(history=recorder.history.records, recipe=run.cfg.recipe_fields(),
                data_source=run.data.dataset.source)


def _recorded_final_eval(run: Run, recorder: RunRecorder) -> Optional[TestResult]:
    """The per-epoch evaluation recorded for the run's last epoch, or ``None`` where it was not recorded here (a
    run resumed from a finished checkpoint made elsewhere)."""
    last = recorder.history.last
    if last is None or last["epoch"] != len(epoch_lengths(run.cfg.epochs, len(run.data.train))):
        return None
    total = run.data.num_eval
    return last["test_loss"], int(round(last["test_acc"] * total)), total


def final_results(run: Run, recorder: RunRecorder,
                  evaluate: Callable[[Any], TestResult]) -> Tuple[TestResult, Dict[str, Any]]:
    """The final report: the test split's result (the validation split's where the data has no test split;
    ``evaluate(batches)`` runs what was not recorded after the last epoch) and ``metrics.json``'s entries
    about it: which split (``evaluated_on``), the validation numbers where there is a validation split, and
    how many unreadable images were ``skipped``."""
    data = run.data
    evaluated = _recorded_final_eval(run, recorder) or evaluate(data.eval)
    test = evaluated if data.test is data.eval else evaluate(data.test)
    extra: Dict[str, Any] = dict(evaluated_on=data.test_split, epoch_evaluation=data.eval_split,
                                 skipped=int(getattr(data.dataset, "skipped", 0)))
    if data.eval_split == "val":
        loss, correct, total = evaluated
        extra.update(val_accuracy=correct / max(total, 1), val_loss=float(loss), val_correct=int(correct),
                     val_total=int(total))
        if data.test_split == "test":
            run.echo(f"Final {test_line(loss, correct, total, 'Validation')}")
    return test, extra


def wait_for_lead(run: Run, identical: Optional[bool]) -> Dict[str, Any]:
    """A worker other than worker 0 at the end: wait while worker 0 exports and reports; its result."""
    run.group.barrier()
    return dict(rank=run.group.rank, workers=run.group.num_workers, weights_identical=identical)


def distributed_info(run: Run, identical: Optional[bool]) -> Dict[str, Any]:
    """``metrics.json``'s ``distributed`` entry of a distributed job (``{}`` otherwise); says whether the workers
    ended with identical weights."""
    group = run.group
    if not group.dist:
        return {}
    if identical is not None:
        run.echo(f"Weights of the {group.num_workers} workers at the end: "
                 f"{'identical' if identical else 'DIFFERENT (this should not happen in a synchronous job)'}")
    return dict(distributed=dict(group.describe(), weights_identical=identical))


def release_workers(run: Run) -> None:
    """Worker 0, its files written: the others, waiting in :func:`wait_for_lead`, may end."""
    run.group.barrier()
