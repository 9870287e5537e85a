"""Training and evaluation of Gluon classifiers (the ``stn-gluon train`` job).

The pieces are separate so the Module trainer can share them: data batching
(:mod:`stn_gluon.data.mnist`), the LR schedule (:func:`make_lr_scheduler`, gluoncv's
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

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..data import mnist as data_lib
from .._runtime.devices import format_ctx, parse_ctx
from .._runtime.errors import CheckpointError, StnGluonError, mxnet_message
from ..nn.explain import explain_batch
from ..export.saved import DEFAULT_PREFIX, export_block, load_model
from .._runtime.files import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ..nn.architecture import default_initializer, initialize_net
from .optstate import restore_updater_state, trainer_updaters, updater_state
from .recipes import TrainConfig, build_net
from .schedule import epoch_lengths, make_lr_scheduler
from .reporting import History, RunRecorder, check_recipe
from .distributed import WorkerGroup, is_dist
from .._runtime.paths import writable_dir
from .runs import RunExistsError, check_save_dir, describe_run, drop_stale_derived, inspect_run, prepare_save_dir

# TrainConfig (stn_gluon.train.recipes) and the schedule (stn_gluon.train.schedule) are importable from here too.
__all__ = ["TrainConfig", "make_lr_scheduler", "make_trainer", "RunAhead", "train_step", "evaluate", "fit",
           "stn_batch", "progress_bar", "default_initializer", "epoch_lengths"]

log = logging.getLogger(__name__)

def progress_bar(iterable, total, desc, enabled=True):
    """A tqdm bar on stderr (sparse updates when stderr is not a terminal)."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=tty,
                mininterval=0.5 if tty else 15, delay=0 if tty else 2, dynamic_ncols=True, file=sys.stderr)


def _split(batch, ctx_list):
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

    def __init__(self, steps=RUN_AHEAD_STEPS):
        self.steps = steps
        self._in_flight = collections.deque()

    def push(self, array):
        self._in_flight.append(array)
        if len(self._in_flight) > self.steps:
            self._in_flight.popleft().wait_to_read()


def train_step(net, trainer, loss_fn, data, label, ctx_list, grad_batch=None):
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


def evaluate(net, batches, ctx_list):
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


def stn_batch(stn, images):
    """What an STN makes of ``images`` ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)`` NumPy."""
    out = stn(images)
    return (out[0] if isinstance(out, (list, tuple)) else out).asnumpy()


#: Parameters per fused optimizer call at most; larger nets are updated in
#: chunks (MXNet 1.9.1's multi_sgd_mom_update crashed with 64, worked with 60).
MAX_AGGREGATED_PARAMS = 32


def make_trainer(params, optimizer, optimizer_params, num_contexts=1, group=None):
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


def _resume_path(cfg):
    if cfg.resume in (None, ""):
        return None
    if cfg.resume == "auto":
        path = os.path.join(cfg.save_dir, CHECKPOINT_NAME)
        if not os.path.exists(path):
            there = inspect_run(cfg.save_dir)
            if there is not None:
                raise RunExistsError(f"{cfg.save_dir} holds {describe_run(there)} but no {CHECKPOINT_NAME} to "
                                     f"continue; replace it with overwrite or choose another save_dir",
                                     params=("overwrite", "save_dir"))
            log.warning("--resume: no checkpoint in %s yet, starting from scratch", cfg.save_dir)
            return None
        return path
    return os.path.join(cfg.resume, CHECKPOINT_NAME) if os.path.isdir(cfg.resume) else cfg.resume


#: Added to the dropout seed per worker rank (more than any run's epochs: no two (rank, epoch) share a seed).
DROPOUT_RANK_STRIDE = 100003


class PreparedData:
    """The arrays and batch iterators a training run needs, built once from an ``DigitDataset``.

    Images stay ``uint8 (N, 1, H, W)``; batches are normalised as they are cut.
    shard ``(rank, workers)``: this worker's slice of every global batch (and of its augmentation).
    """

    def __init__(self, cfg, dataset, shard=(0, 1)):
        self.dataset = dataset
        self.train_pixels = data_lib.with_channel(dataset.train_images)
        self.test_pixels = data_lib.with_channel(dataset.test_images)
        self.input_shape = self.train_pixels.shape[1:]
        self.num_classes = 10
        self.rank = shard[0]
        step = cfg.batch_size * shard[1]
        if len(self.train_pixels) < step:
            workers = f" x {shard[1]} workers" if shard[1] > 1 else ""
            raise StnGluonError(f"batch_size {cfg.batch_size}{workers} is larger than the training set "
                                f"({len(self.train_pixels)})", params=("batch_size",))
        self.train = data_lib.ArrayBatches(self.train_pixels, dataset.train_labels, cfg.batch_size,
                                           shuffle=True, seed=cfg.seed, last_batch="discard", shard=shard)
        # An eval batch that divides the test set: no padded batch (Module.score would count it).
        n_test = self.num_test
        eval_batch = max(d for d in range(1, min(500, n_test) + 1) if n_test % d == 0)
        self.test = data_lib.ArrayBatches(self.test_pixels, dataset.test_labels, eval_batch)
        self.augment = data_lib.RandomAffine(seed=cfg.seed, shard=shard) if cfg.augment else None

    @property
    def num_test(self):
        return len(self.test_pixels)

    def test_sample(self, count=64):
        """The first ``count`` test images, normalised: ``float32 (count, C, H, W)``."""
        return data_lib.normalize(self.test_pixels[:count])

    def explained_sample(self, model, count=64):
        """The first ``count`` test images through ``model`` (a :class:`~stn_gluon.export.saved.LoadedModel`),
        explained for ``stn_grid.png``; ``None`` for a model without an STN."""
        if model.stn is None:
            return None
        return explain_batch(model, self.test_sample(count), self.dataset.test_labels[:count])

    def set_epoch(self, epoch, seed):
        """Shuffle order, augmentation draws and dropout masks of epoch ``epoch`` (0-based).

        Dropout masks are drawn per worker (a seed per rank): the one thing a
        distributed run draws differently from one process.
        """
        self.train.set_epoch(epoch)
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        mx.random.seed(seed * 1000 + epoch + DROPOUT_RANK_STRIDE * self.rank)

    def model_meta(self, cfg, source, **extra):
        """The ``model.json`` beside an exported model: how to feed it."""
        return dict(model=cfg.model, transform=cfg.transform if cfg.model.startswith("stn") else None,
                    dataset=cfg.dataset,
                    input_shape=list(self.input_shape), input_name="data",
                    mean=data_lib.MNIST_MEAN, std=data_lib.MNIST_STD,
                    classes=[str(i) for i in range(self.num_classes)], source=source, **extra)


def _check_save_dir(cfg):
    writable_dir(cfg.save_dir, "save_dir")  # a folder, or one that can be made ...
    check_save_dir(cfg)  # ... and not a run nobody asked to replace


def setup_run(cfg, dataset=None, build=None):
    """Validate ``cfg``, join the workers, load and prepare the data, build the model, create the save dir.

    build(prepared) -> model: the trainer's network (a Gluon block, a symbol), built
    before anything is written so that a network that cannot be built leaves no trace.
    In a distributed job (``cfg.kvstore`` ``dist_*``) this waits for every
    worker, sets ``cfg.workers``, prepares this worker's shard, and only
    worker 0 checks and prepares the save dir (the others write nothing).
    Returns ``(ctx_list, prepared, model, group)`` (group: the
    :class:`~stn_gluon.train.distributed.WorkerGroup`).
    """
    cfg.validate()
    ctx_list = parse_ctx(cfg.ctx)
    if not is_dist(cfg.kvstore):
        _check_save_dir(cfg)  # before the data loads
    group = WorkerGroup(cfg.kvstore, len(ctx_list))  # a dist store waits here for every worker and server
    cfg.workers = group.num_workers
    if group.dist and group.is_lead:
        _check_save_dir(cfg)
    if dataset is None:
        from ..data.distortions import load_dataset

        dataset = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    prepared = PreparedData(cfg, dataset, group.shard())
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build(prepared) if build is not None else None
    if group.is_lead:
        prepare_save_dir(cfg)
    return ctx_list, prepared, model, group


def fit(cfg, dataset=None, echo=print, on_epoch=None):
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
    ``{"rank": ..., "workers": ...}``.
    """
    ctx_list, data, net, group = setup_run(cfg, dataset, lambda d: build_net(cfg, d.input_shape, d.num_classes))
    if on_epoch is not None and group.dist:
        raise StnGluonError("on_epoch cannot stop a distributed job (only worker 0 would stop)")
    lead = group.is_lead
    if not lead:
        echo = silent
    initialize_net(net, ctx_list)
    if cfg.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((2,) + data.input_shape, ctx=ctx_list[0]))  # finish deferred init

    scheduler = group.lr_scheduler(cfg, len(data.train))
    optimizer_params = dict(wd=cfg.wd, lr_scheduler=scheduler)
    if cfg.optimizer in ("sgd", "nag"):
        optimizer_params["momentum"] = cfg.momentum
    trainer = make_trainer(net.collect_params(), cfg.optimizer, optimizer_params, len(ctx_list), group)
    recorder = RunRecorder(cfg, data.dataset, "gluon", format_ctx(ctx_list), echo)
    resume = _resume_path(cfg)
    if resume:  # every worker loads worker 0's checkpoint (its optimizer state is each worker's own)
        recorder.history = _restore(resume, cfg, net, trainer, ctx_list)
    recorder.start(resume, len(recorder.history))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    lengths = epoch_lengths(cfg.epochs, len(data.train))
    for epoch in range(len(recorder.history), len(lengths)):
        data.set_epoch(epoch, cfg.seed)
        tic = time.time()
        loss_acc = [mx.nd.zeros(1, ctx=c) for c in ctx_list]
        correct_acc = [mx.nd.zeros(1, ctx=c) for c in ctx_list]
        seen = 0
        batches = itertools.islice(data.train, lengths[epoch])
        bar = progress_bar(batches, lengths[epoch], f"Epoch {epoch + 1}/{cfg.epochs}", cfg.progress and lead)
        run_ahead = RunAhead()
        for i, (batch, label) in enumerate(bar):
            if data.augment is not None:
                batch = data.augment(batch)
            outs, ys, losses = train_step(net, trainer, loss_fn, batch, label, ctx_list,
                                          group.grad_batch(batch.shape[0]))
            run_ahead.push(losses[0])
            for k, (o, y, l) in enumerate(zip(outs, ys, losses)):
                loss_acc[k] += l.sum()
                correct_acc[k] += (o.argmax(axis=1) == y).sum()
            seen += batch.shape[0]
            if cfg.progress and lead and (i % 50 == 49 or i == lengths[epoch] - 1):
                loss_sum = sum(a.asscalar() for a in loss_acc)
                correct = sum(a.asscalar() for a in correct_acc)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                img_s=f"{seen / (time.time() - tic):.0f}", refresh=False)
        train_loss = sum(a.asscalar() for a in loss_acc) / seen
        train_acc = sum(a.asscalar() for a in correct_acc) / seen
        train_seconds = time.time() - tic
        bar.close()
        if not lead:
            group.barrier()  # while worker 0 evaluates and checkpoints
            continue
        if cfg.test_each_epoch or epoch == len(lengths) - 1:
            test_loss, test_correct, test_total = evaluate(net, data.test, ctx_list)
        else:
            test_loss, test_correct, test_total = float("nan"), 0, 0  # not tested
        # images/s: of the whole job (every worker trained as many images as this one)
        lr = group.learning_rate(trainer.learning_rate, scheduler, sum(lengths[:epoch + 1]))
        record = recorder.end_epoch(epoch + 1, lr, train_loss, train_acc,
                                    seen * group.num_workers, train_seconds,
                                    time.time() - tic, test_loss, test_correct, test_total)
        save_checkpoint(os.path.join(cfg.save_dir, CHECKPOINT_NAME),
                        dict(epoch=epoch + 1, history=recorder.history.records, recipe=cfg.recipe_fields(),
                             data_source=data.dataset.source),
                        net.save_parameters, updater_state(trainer_updaters(trainer)))
        group.barrier()
        if on_epoch is not None and on_epoch(record):
            break

    return end_job(group, {k: p.data(ctx_list[0]) for k, p in net.collect_params().items()},
                   lambda extra: _finish(cfg, net, data, recorder, ctx_list, extra), echo)


def silent(*_args, **_kwargs):
    """The echo of workers other than worker 0 (it reports for the job)."""


def end_job(group, weights, report, echo, key=None):
    """The end of a run, for both trainers: the workers compare their final ``weights`` (``{name: NDArray}``;
    ``key``: the kvstore key to do it under); worker 0 calls ``report(extra)`` (``extra``: the ``distributed``
    entry of ``metrics.json``) and returns its metrics while the others wait, and they return
    ``{"rank", "workers", "weights_identical"}``."""
    identical = group.compare_weights(weights, key=key)
    if not group.is_lead:
        group.barrier()  # while worker 0 exports and reports
        return dict(rank=group.rank, workers=group.num_workers, weights_identical=identical)
    metrics = report(distributed_info(group, identical, echo))
    group.barrier()
    return metrics


def distributed_info(group, identical, echo):
    """``metrics.json``'s ``distributed`` entry of a distributed job (``{}`` otherwise); reports
    whether the workers ended with identical weights."""
    if not group.dist:
        return {}
    if identical is not None:
        echo(f"Weights of the {group.num_workers} workers at the end: "
             f"{'identical' if identical else 'DIFFERENT (this should not happen in a synchronous job)'}")
    return dict(distributed=dict(group.describe(), weights_identical=identical))


def _restore(path, cfg, net, trainer, ctx_list):
    with load_checkpoint(path) as (meta, params_file, optimizer_state):
        check_recipe(cfg.recipe_differences(meta.get("recipe", {})), path)
        try:
            net.load_parameters(params_file, ctx=ctx_list)
            if optimizer_state is not None:
                restore_updater_state(trainer_updaters(trainer), *optimizer_state, source=path)
        except (mx.base.MXNetError, AssertionError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} does not fit this model "
                                  f"({mxnet_message(err)})") from None
    history = History(meta.get("history"))
    if len(history) != meta["epoch"]:
        raise CheckpointError(f"checkpoint {path} is inconsistent (epoch {meta['epoch']}, "
                              f"{len(history)} history rows)")
    return history


def _final_test(recorder, data, net, ctx_list):
    last = recorder.history.last
    if last is not None and last["epoch"] == len(epoch_lengths(recorder.cfg.epochs, len(data.train))):
        total = data.num_test
        return last["test_loss"], int(round(last["test_acc"] * total)), total
    return evaluate(net, data.test, ctx_list)


def _finish(cfg, net, data, recorder, ctx_list, extra):
    """Export the hybridized model, then metrics (with ``extra``) and plots (the STN's from the export, as tools
    will load it)."""
    sample = data.test_sample(64)
    example = mx.nd.array(sample, ctx=ctx_list[0])
    prefix = os.path.join(cfg.save_dir, DEFAULT_PREFIX)
    export_block(net, prefix, example,
                 meta=data.model_meta(cfg, "gluon", config=getattr(net, "config", {})))
    drop_stale_derived(cfg.save_dir)
    return recorder.finish(*_final_test(recorder, data, net, ctx_list),
                           model_files=[prefix + "-symbol.json", prefix + "-0000.params"],
                           stn_sample=data.explained_sample(load_model(cfg.save_dir, ctx_list[:1])), **extra)
