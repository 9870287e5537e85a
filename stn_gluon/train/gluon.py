"""Training and evaluation of Gluon classifiers (the ``stn-gluon train`` job).

:func:`fit` reads top-down: start the run, build the network, restore a checkpoint, train the epochs,
finish. What the Module trainer shares with it is in :mod:`stn_gluon.train.steps` (the run's start and
end), data batching (:mod:`stn_gluon.data.mnist`), the LR schedule (:func:`make_lr_scheduler`, gluoncv's
schedulers), history and metrics (:mod:`stn_gluon.train.reporting`), checkpoints
(:mod:`stn_gluon._runtime.files`), plots (:mod:`stn_gluon.train.plots`) and export
(:mod:`stn_gluon.export.saved`).
"""
import collections
import itertools
import logging
import os
import sys
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .._runtime.errors import CheckpointError, StnGluonError, mxnet_message
from .._runtime.files import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ..export.saved import DEFAULT_PREFIX, export_block
from ..nn.architecture import default_initializer, initialize_net
from .distributed import WorkerGroup
from .optstate import restore_updater_state, trainer_updaters, updater_state
from .recipes import TrainConfig, build_net
from .reporting import History, RunRecorder, check_recipe
from .runs import drop_stale_derived
from .schedule import epoch_lengths, make_lr_scheduler
from .steps import (PreparedData, Run, TestResult, distributed_info, final_results, make_recorder, nothing_to_resume,
                    open_save_dir, optimizer_params, release_workers, resume_state, start_run, wait_for_lead)

# TrainConfig (stn_gluon.train.recipes), the schedule (stn_gluon.train.schedule) and PreparedData
# (stn_gluon.train.steps) are importable from here too.
__all__ = ["TrainConfig", "make_lr_scheduler", "make_trainer", "RunAhead", "train_step", "evaluate", "fit",
           "stn_batch", "progress_bar", "default_initializer", "epoch_lengths", "PreparedData"]

log = logging.getLogger(__name__)


def progress_bar(iterable: Iterable[Any], total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (sparse updates when stderr is not a terminal)."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=tty,
                mininterval=0.5 if tty else 15, delay=0 if tty else 2, dynamic_ncols=True, file=sys.stderr)


def _split(batch: Any, ctx_list: Sequence[Any]) -> List[Any]:
    return gluon.utils.split_and_load(batch, ctx_list, even_split=False)


#: Steps the training loop may queue ahead of the engine: enough that the
#: operators never wait for Python, few enough that batches do not pile up.
RUN_AHEAD_STEPS = 3


class RunAhead:
    """Lets Python queue at most ``steps`` training steps ahead of MXNet's asynchronous engine.

    ``push(loss)`` after each step; once more than ``steps`` are in flight it
    waits for the oldest. Waiting every step instead makes Python and the
    operators take turns; never waiting piles batches up in memory.
    """

    def __init__(self, steps: int = RUN_AHEAD_STEPS) -> None:
        self.steps = steps
        self._in_flight: Deque[Any] = collections.deque()

    def push(self, array: Any) -> None:
        self._in_flight.append(array)
        if len(self._in_flight) > self.steps:
            self._in_flight.popleft().wait_to_read()


def train_step(net: Any, trainer: Any, loss_fn: Any, data: Any, label: Any, ctx_list: Sequence[Any],
               grad_batch: Optional[int] = None) -> Tuple[List[Any], List[Any], List[Any]]:
    """One data-parallel SGD step: split the batch over ``ctx_list``, forward, backward, update.

    grad_batch: the number of images the summed gradient is divided by
    (default: this batch's; a synchronous distributed job: the global batch,
    :meth:`~stn_gluon.train.distributed.WorkerGroup.grad_batch`).
    Returns the per-context ``(outputs, labels, losses)`` lists (NDArrays, not synchronised).
    """
    xs, ys = _split(data, ctx_list), _split(label, ctx_list)
    with autograd.record():
        outs = [net(x) for x in xs]
        losses = [loss_fn(o, y) for o, y in zip(outs, ys)]
    autograd.backward(losses)
    trainer.step(grad_batch or data.shape[0])
    return outs, ys, losses


def evaluate(net: Any, batches: Iterable[Any], ctx_list: Sequence[Any]) -> TestResult:
    """Average cross-entropy and accuracy of ``net`` over ``batches`` -> ``(loss, correct, total)``."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loss_sum, correct, total = 0.0, 0, 0
    for data, label in batches:
        for x, y in zip(_split(data, ctx_list), _split(label, ctx_list)):
            out = net(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            loss_sum += loss_fn(out, y).sum().asscalar()
            correct += int((out.argmax(axis=1) == y).sum().asscalar())
            total += x.shape[0]
    return loss_sum / max(total, 1), correct, total


def stn_batch(stn: Any, images: Any) -> np.ndarray:
    """What an STN makes of ``images`` ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)`` NumPy."""
    out = stn(images)
    return (out[0] if isinstance(out, (list, tuple)) else out).asnumpy()


#: Parameters per fused optimizer call at most; larger nets are updated in
#: chunks (MXNet 1.9.1's multi_sgd_mom_update crashed with 64, worked with 60).
MAX_AGGREGATED_PARAMS = 32


def make_trainer(params: Any, optimizer: str, optimizer_params: Dict[str, Any], num_contexts: int = 1,
                 group: Optional[WorkerGroup] = None) -> gluon.Trainer:
    """``gluon.Trainer`` whose optimizer updates all parameters in one fused call where it can.

    group: the :class:`~stn_gluon.train.distributed.WorkerGroup` whose kvstore reduces
    the gradients (default: ``device`` over several contexts, none for one).

    MXNet's SGD updates 4 parameters per ``multi_sgd_mom_update`` call by
    default (``MXNET_OPTIMIZER_AGGREGATION_SIZE``); the Python loop around
    those calls was half the Python time of a training step. Optimizers
    without aggregated updates (0) are left as they are.
    """
    opt = mx.optimizer.create(optimizer, **optimizer_params)
    if opt.aggregate_num > 0:
        count = len(params.values()) if hasattr(params, "values") else len(params)
        opt.aggregate_num = max(opt.aggregate_num, min(count, MAX_AGGREGATED_PARAMS))
    if group is None:
        return gluon.Trainer(params, opt, kvstore="device" if num_contexts > 1 else None)
    return gluon.Trainer(params, opt, kvstore=group.kvstore, update_on_kvstore=group.update_on_kvstore)


def fit(cfg: TrainConfig, dataset: Any = None, echo: Callable[[str], None] = print,
        on_epoch: Optional[Callable[[Dict[str, Any]], Any]] = None) -> Dict[str, Any]:
    """Train per ``cfg`` (a :class:`TrainConfig`) and write the run's files to ``cfg.save_dir``.

    dataset: a :class:`~stn_gluon.data.mnist.DigitDataset` (default: :func:`~stn_gluon.data.mnist.load_mnist`).
    on_epoch(record): called after each epoch with its history record; returning
    True ends the run there (it is still exported and reported).
    Writes ``checkpoint.zip`` after every epoch, then ``model-symbol.json``,
    ``model-0000.params``, ``model.json``, ``metrics.json``, ``history.csv``,
    ``curves.png`` and (with an STN) ``stn_grid.png``. Returns the metrics dict.

    In a distributed job (``cfg.kvstore`` ``dist_*``, started by
    :func:`stn_gluon.train.distributed.launch`) every worker trains its shard;
    worker 0 alone evaluates and writes, the others wait for it at a barrier
    after each epoch and at the end. Worker 0 returns the metrics, the others
    ``{"rank": ..., "workers": ..., "weights_identical": ...}``.
    """
    run = start_run(cfg, dataset, echo)  # the run's own config: cfg is left as it is
    if on_epoch is not None and run.group.dist:
        raise StnGluonError("on_epoch cannot stop a distributed job (only worker 0 would stop)")
    net = build_net(run.cfg, run.data.input_shape, run.data.num_classes, run.data.digits)
    _check_input(net, run)
    with open_save_dir(run) as previous:  # overwrite: the old run is kept aside until the first checkpoint
        _initialize(net, run)
        scheduler = run.group.lr_scheduler(run.cfg, len(run.data.train))
        trainer = make_trainer(net.collect_params(), run.cfg.optimizer, optimizer_params(run.cfg, scheduler),
                               len(run.ctx_list), run.group)
        recorder = make_recorder(run, "gluon")
        resume = _resume_path(run)
        if resume:  # every worker loads worker 0's checkpoint (its optimizer state is each worker's own)
            recorder.history = _restore(resume, run, net, trainer)
        recorder.start(resume, len(recorder.history))

        lengths = epoch_lengths(run.cfg.epochs, len(run.data.train))
        for epoch in range(len(recorder.history), len(lengths)):
            trained = _train_epoch(run, net, trainer, epoch, lengths[epoch])
            if not run.lead:
                run.group.barrier()  # while worker 0 evaluates and checkpoints
                continue
            record = _end_epoch(run, net, trainer, recorder, trained, lr=run.group.learning_rate(
                trainer.learning_rate, scheduler, sum(lengths[:epoch + 1])))
            previous.discard()  # the new run has a checkpoint: the old one goes
            run.group.barrier()
            if on_epoch is not None and on_epoch(record):
                break

    identical = run.group.compare_weights({k: p.data(run.ctx_list[0]) for k, p in net.collect_params().items()})
    if not run.lead:
        return wait_for_lead(run, identical)
    metrics = _finish(run, net, recorder, distributed_info(run, identical))
    release_workers(run)
    return metrics


def _check_input(net: Any, run: Run) -> None:
    """Refuse, in one line and before anything is written, a network that cannot take the data's input shape
    (a localization net that pools a small image away): its graph's shapes are inferred, nothing initialised."""
    shape = (2,) + tuple(run.data.input_shape)
    try:
        out = net(mx.sym.var("data"))
        (out[0] if isinstance(out, (list, tuple)) else out).infer_shape(data=shape)
    except (mx.base.MXNetError, ValueError) as err:
        raise StnGluonError(f"{run.cfg.model} does not accept input {shape[1:]} ({mxnet_message(err)}); a larger "
                            f"input_size may fit it", params=("input_size",)) from None


def _initialize(net: Any, run: Run) -> None:
    """Initialise ``net``'s weights on the run's devices, hybridize it (``cfg.hybridize``), finish deferred init."""
    initialize_net(net, run.ctx_list)
    if run.cfg.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((2,) + tuple(run.data.input_shape), ctx=run.ctx_list[0]))


def _resume_path(run: Run) -> Optional[str]:
    """The checkpoint ``cfg.resume`` names (``"auto"``: the save dir's), or ``None`` to start from scratch."""
    resume = run.cfg.resume
    if not resume:
        return None
    if resume == "auto":
        path = os.path.join(run.save_dir, CHECKPOINT_NAME)
        if os.path.exists(path):
            return path
        nothing_to_resume(run, CHECKPOINT_NAME)
        return None
    return os.path.join(resume, CHECKPOINT_NAME) if os.path.isdir(resume) else resume


def _restore(path: str, run: Run, net: Any, trainer: gluon.Trainer) -> History:
    """Load the checkpoint at ``path`` into ``net`` and ``trainer``'s optimizer; returns its history."""
    with load_checkpoint(path) as (meta, params_file, optimizer_state):
        check_recipe(run.cfg.recipe_differences(meta.get("recipe", {})), path)
        try:
            net.load_parameters(params_file, ctx=run.ctx_list)
            if optimizer_state is not None:
                arrays, info = optimizer_state
                restore_updater_state(trainer_updaters(trainer), arrays, info, source=path)
        except (mx.base.MXNetError, AssertionError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} does not fit this model "
                                  f"({mxnet_message(err)})") from None
    history = History(meta.get("history"))
    if len(history) != meta["epoch"]:
        raise CheckpointError(f"checkpoint {path} is inconsistent (epoch {meta['epoch']}, "
                              f"{len(history)} history rows)")
    return history


class TrainedEpoch(NamedTuple):
    """What one worker's pass over an epoch's batches measured."""
    epoch: int  # 0-based
    loss: float
    accuracy: float
    images: int  # this worker's
    train_seconds: float
    started: float  # time.time() at the start


def _train_epoch(run: Run, net: Any, trainer: gluon.Trainer, epoch: int, batches: int) -> TrainedEpoch:
    """Train epoch ``epoch`` (0-based) of ``batches`` batches: this worker's shard, with a progress bar."""
    cfg, data, ctx_list = run.cfg, run.data, run.ctx_list
    data.set_epoch(epoch, cfg.seed)
    tic = time.time()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loss_acc = [mx.nd.zeros(1, ctx=c) for c in ctx_list]
    correct_acc = [mx.nd.zeros(1, ctx=c) for c in ctx_list]
    seen = 0
    shown = cfg.progress and run.lead
    bar = progress_bar(itertools.islice(data.train, batches), batches, f"Epoch {epoch + 1}/{cfg.epochs}", shown)
    run_ahead = RunAhead()
    for i, (batch, label) in enumerate(bar):
        if data.augment is not None:
            batch = data.augment(batch)
        outs, ys, losses = train_step(net, trainer, loss_fn, batch, label, ctx_list,
                                      run.group.grad_batch(batch.shape[0]))
        run_ahead.push(losses[0])
        for k, (o, y, l) in enumerate(zip(outs, ys, losses)):
            loss_acc[k] += l.sum()
            correct_acc[k] += (o.argmax(axis=1) == y).sum()
        seen += batch.shape[0]
        if shown and (i % 50 == 49 or i == batches - 1):
            bar.set_postfix(loss=f"{_total(loss_acc) / seen:.4f}", acc=f"{_total(correct_acc) / seen:.4f}",
                            img_s=f"{seen / (time.time() - tic):.0f}", refresh=False)
    trained = TrainedEpoch(epoch, _total(loss_acc) / seen, _total(correct_acc) / seen, seen, time.time() - tic, tic)
    bar.close()
    return trained


def _total(per_context: List[Any]) -> float:
    return float(sum(a.asscalar() for a in per_context))


def _end_epoch(run: Run, net: Any, trainer: gluon.Trainer, recorder: RunRecorder, trained: TrainedEpoch,
               lr: float) -> Dict[str, Any]:
    """Worker 0 after an epoch: test (every epoch, or the last only), record and checkpoint; the record."""
    cfg = run.cfg
    last = trained.epoch == len(epoch_lengths(cfg.epochs, len(run.data.train))) - 1
    test = evaluate(net, run.data.eval, run.ctx_list) if cfg.test_each_epoch or last else (float("nan"), 0, 0)
    # images/s: of the whole job (every worker trained as many images as this one)
    record = recorder.end_epoch(trained.epoch + 1, lr, trained.loss, trained.accuracy,
                                trained.images * run.group.num_workers, trained.train_seconds,
                                time.time() - trained.started, *test)
    save_checkpoint(os.path.join(run.save_dir, CHECKPOINT_NAME), dict(epoch=trained.epoch + 1,
                                                                      **resume_state(run, recorder)),
                    net.save_parameters, updater_state(trainer_updaters(trainer)))
    return record


class _TrainedModel(NamedTuple):
    """The trained network in memory, shaped as :func:`~stn_gluon.nn.explain.explain_batch` reads a model."""
    net: Any
    stn: Any
    meta: Dict[str, Any]
    prefix: str


def _finish(run: Run, net: Any, recorder: RunRecorder, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Worker 0 at the end: export the hybridized model, then metrics (with ``extra``) and plots (the STN's
    drawn by the trained network)."""
    cfg, data = run.cfg, run.data
    prefix = os.path.join(run.save_dir, DEFAULT_PREFIX)
    meta = data.model_meta(cfg, "gluon", config=getattr(net, "config", {}))
    export_block(net, prefix, mx.nd.array(data.test_sample(64), ctx=run.ctx_list[0]), meta=meta)
    drop_stale_derived(run.save_dir)
    test, reported = final_results(run, recorder, lambda batches: evaluate(net, batches, run.ctx_list))
    trained = _TrainedModel(net, getattr(net, "stn", None), meta, prefix)
    return recorder.finish(*test, model_files=[prefix + "-symbol.json", prefix + "-0000.params"],
                           stn_sample=data.explained_sample(trained), **dict(reported, **extra))
