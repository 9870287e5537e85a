"""Training the symbolic STN classifier with ``mx.mod.Module.fit`` (``stn-gluon train-symbol``).

Shares everything but the loop with the Gluon trainer: the configuration and
LR schedule (:mod:`stn_gluon.train.gluon`), the in-memory batches and
augmentation (:mod:`stn_gluon.data.mnist`), the history, metrics and plots
(:class:`stn_gluon.train.reporting.RunRecorder`), atomic writes (:mod:`stn_gluon._runtime.files`).

Checkpoints are Module checkpoints, ``model-symbol.json`` + ``model-NNNN.params``
(epoch NNNN, 1-based) with ``model-NNNN.optimizer`` (the optimizer state as an
``mx.nd.save`` dict) + ``model-NNNN.optimizer.json`` (its counters) and
``train_state.json`` (history and recipe) for ``--resume``; nothing in them
loads through pickle (the pickled ``model-NNNN.states`` of older versions is
refused, never opened). The latest
``model-NNNN.params`` is the trained model every tool takes.
"""
import glob
import json
import logging
import os
import re
import time
import warnings

import mxnet as mx

from .._runtime.devices import format_ctx
from ..nn.architecture import LENET_MODELS, default_initializer
from .recipes import resolve_architecture
from .._runtime.errors import CheckpointError, StnGluonError, mxnet_message
from .distributed import FINGERPRINT_NAME
from ..export.saved import DEFAULT_PREFIX, load_model, write_model_meta
from .._runtime.files import atomic_path, write_json
from .optstate import module_updaters, restore_updater_state, updater_state
from .runs import RunExistsError, describe_run, drop_stale_derived, inspect_run
from .reporting import History, RunRecorder, check_recipe
from .gluon import end_job, evaluate, setup_run, silent
from ..symbol.stn_symbol import get_symbol_for

__all__ = ["BatchIter", "fit_module", "latest_checkpoint"]

log = logging.getLogger(__name__)
STATE_FILE = "train_state.json"


class BatchIter(mx.io.DataIter):
    """``mx.io.DataIter`` over :class:`stn_gluon.data.mnist.ArrayBatches`, with optional augmentation.

    Yields ``DataBatch(data=[(N, C, H, W)], label=[(N,)])``. ``reset()`` moves to
    the next epoch (Module.fit calls it after each one), which reshuffles and
    redraws the augmentation deterministically per epoch.
    """

    def __init__(self, batches, prepared=None, seed=0, epoch=0):
        super().__init__(batches.batch_size)
        self.batches, self.prepared, self.seed = batches, prepared, seed
        self.epoch = epoch
        shape = (batches.batch_size,) + batches.data.shape[1:]
        self.provide_data = [mx.io.DataDesc("data", shape)]
        self.provide_label = [mx.io.DataDesc("softmax_label", (batches.batch_size,))]
        self._start()

    def _start(self):
        if self.prepared is not None:
            self.prepared.set_epoch(self.epoch, self.seed)
        self._it = iter(self.batches)

    def reset(self):
        if self.prepared is not None:
            self.epoch += 1
        self._start()

    def next(self):
        data, label = next(self._it)  # full batches only: ArrayBatches discards or divides evenly
        if self.prepared is not None and self.prepared.augment is not None:
            data = self.prepared.augment(data)
        return mx.io.DataBatch([data], [label])


def _epochs_in(prefix):
    return sorted(int(m.group(1)) for f in glob.glob(glob.escape(prefix) + "-*.params")
                  if (m := re.search(r"-(\d{4})\.params$", f)))


def latest_checkpoint(save_dir):
    """``(prefix, epoch)`` of the newest Module checkpoint in ``save_dir``, or ``None``."""
    prefix = os.path.join(save_dir, DEFAULT_PREFIX)
    epochs = _epochs_in(prefix)
    return (prefix, epochs[-1]) if epochs and os.path.isfile(prefix + "-symbol.json") else None


def _save(module, prefix, epoch, state):
    """Atomically write ``prefix-NNNN.params``, ``.optimizer(.json)`` and the resume state (symbol once)."""
    if not os.path.isfile(prefix + "-symbol.json"):
        with atomic_path(prefix + "-symbol.json") as tmp:
            module.symbol.save(tmp)
    arg, aux = module.get_params()
    params = {f"arg:{k}": v for k, v in arg.items()}
    params.update({f"aux:{k}": v for k, v in aux.items()})
    optimizer = updater_state(module_updaters(module))
    if optimizer is not None:  # none with dist_async: the optimizer runs on the servers
        with atomic_path(f"{prefix}-{epoch:04d}.optimizer") as tmp:
            mx.nd.save(tmp, optimizer[0])
        write_json(f"{prefix}-{epoch:04d}.optimizer.json", optimizer[1])
    with atomic_path(f"{prefix}-{epoch:04d}.params") as tmp:
        mx.nd.save(tmp, params)
    write_json(os.path.join(os.path.dirname(prefix), STATE_FILE), dict(state, epoch=epoch))


def _optimizer_state(prefix, epoch):
    """The optimizer state saved with epoch ``epoch``: ``(arrays, info)``, or ``None`` if there is none.

    A pickled ``.states`` file (older versions) is refused, never opened.
    """
    base = f"{prefix}-{epoch:04d}"
    if os.path.isfile(base + ".optimizer") and os.path.isfile(base + ".optimizer.json"):
        try:
            arrays = mx.nd.load(base + ".optimizer")
            with open(base + ".optimizer.json") as f:
                info = json.load(f)
        except (mx.base.MXNetError, OSError, ValueError) as err:
            raise CheckpointError(f"{base}.optimizer is damaged ({mxnet_message(err)}); train again with "
                                  f"overwrite or into another save_dir", params=("overwrite", "save_dir")) from None
        if not isinstance(arrays, dict) or not isinstance(info, dict):
            raise CheckpointError(f"{base}.optimizer is malformed; train again with overwrite", params=("overwrite",))
        return arrays, info
    if os.path.isfile(base + ".states"):
        raise CheckpointError(f"{base}.states is from an older stn-gluon: a pickled optimizer state, which is "
                              f"never loaded (it could run code); train again with overwrite or into "
                              f"another save_dir", params=("overwrite", "save_dir"))
    return None


def _load_resume(cfg, path, symbol):
    """Read a Module checkpoint to resume: ``(arg_params, aux_params, optimizer_state, history, epoch)``."""
    if path == "auto":
        found = latest_checkpoint(cfg.save_dir)
        if found is None:
            there = inspect_run(cfg.save_dir)
            if there is not None:
                raise RunExistsError(f"{cfg.save_dir} holds {describe_run(there)} but no Module checkpoint to "
                                     f"continue; replace it with --overwrite or choose another --save-dir")
            log.warning("--resume: no Module checkpoint in %s yet, starting from scratch", cfg.save_dir)
            return None
        prefix, epoch = found
    else:
        from ..export.saved import resolve_model
        prefix, epoch = resolve_model(path)
    state_file = os.path.join(os.path.dirname(prefix), STATE_FILE)
    history = History()
    if os.path.isfile(state_file):
        try:
            with open(state_file) as f:
                state = json.load(f)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{state_file} is damaged ({err})") from None
        check_recipe(cfg.recipe_differences(state.get("recipe", {})), prefix)
        history = History([r for r in state.get("history", []) if r["epoch"] <= epoch])
    try:
        saved_sym, arg, aux = mx.model.load_checkpoint(prefix, epoch)
    except (mx.base.MXNetError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {prefix}-{epoch:04d}.params is damaged ({mxnet_message(err)})") from None
    if sorted(saved_sym.list_arguments()) != sorted(symbol.list_arguments()):
        raise CheckpointError(f"checkpoint {prefix}-symbol.json is another network than {cfg.model}")
    return arg, aux, _optimizer_state(prefix, epoch), history, epoch


class _quiet_module_warnings(logging.Filter):
    """Module.fit re-binds and re-initialises what we prepared (for --resume) and warns each time."""

    NOISE = ("Already bound", "Parameters already initialized", "optimizer already initialized")

    def filter(self, record):
        return not str(record.msg).startswith(self.NOISE)

    def __enter__(self):
        logging.getLogger().addFilter(self)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message="|".join(self.NOISE))
        return self

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        logging.getLogger().removeFilter(self)


_QUIET_LOG = logging.getLogger("stn_gluon.train.module.other_workers")
_QUIET_LOG.setLevel(logging.WARNING)


class _update_on_kvstore:
    """Module reads where to run the optimizer from ``MXNET_UPDATE_ON_KVSTORE`` (None: leave it as it is)."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.saved = os.environ.get("MXNET_UPDATE_ON_KVSTORE")
        if self.on is not None:
            os.environ["MXNET_UPDATE_ON_KVSTORE"] = "1" if self.on else "0"

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("MXNET_UPDATE_ON_KVSTORE", None)
        else:
            os.environ["MXNET_UPDATE_ON_KVSTORE"] = self.saved


def _check_input(symbol, shape):
    try:
        symbol.infer_shape(data=shape)
    except mx.base.MXNetError as err:
        raise StnGluonError(f"the network does not accept input {shape[1:]} ({mxnet_message(err)})") from None


def fit_module(cfg, dataset=None, echo=print, symbol=None):
    """Train the network of ``cfg`` (or ``symbol``) with ``Module.fit``; returns the metrics dict.

    The graph is :func:`~stn_gluon.symbol.get_symbol_for` of the architecture
    the Gluon trainer would build (:func:`~stn_gluon.train.recipes.resolve_architecture`);
    a configuration the Module path cannot express is refused with one line.
    """
    if cfg.model not in LENET_MODELS:
        raise StnGluonError(f"train-symbol: model {cfg.model!r} has no symbolic form ({' or '.join(LENET_MODELS)})")
    if cfg.epochs != int(cfg.epochs):
        raise StnGluonError(f"train-symbol: Module.fit trains whole epochs only, got epochs {cfg.epochs}",
                            params=("epochs",))
    # the network `stn-gluon train` builds with these settings, or a one-line refusal
    ctx_list, data, symbol, group = setup_run(cfg, dataset, lambda d: symbol if symbol is not None else
                                       get_symbol_for(resolve_architecture(cfg, d.input_shape, d.num_classes)))
    _check_input(symbol, (cfg.batch_size,) + data.input_shape)
    prefix = os.path.join(cfg.save_dir, DEFAULT_PREFIX)
    lead = group.is_lead
    recorder = RunRecorder(cfg, data.dataset, "module", format_ctx(ctx_list), echo if lead else silent)
    resumed = _load_resume(cfg, cfg.resume, symbol) if cfg.resume else None
    begin_epoch = 0
    arg_params = aux_params = None
    if resumed:
        arg_params, aux_params, optimizer_state, recorder.history, begin_epoch = resumed
    recorder.start(f"{prefix}-{begin_epoch:04d}.params" if resumed else None, begin_epoch)

    train_iter = BatchIter(data.train, data, seed=cfg.seed, epoch=begin_epoch)
    test_iter = BatchIter(data.test)
    iters = len(data.train)
    scheduler = group.lr_scheduler(cfg, iters)
    optimizer_params = dict(wd=cfg.wd, lr_scheduler=scheduler,
                            begin_num_update=begin_epoch * iters,
                            rescale_grad=1.0 / group.grad_batch(cfg.batch_size))
    if cfg.optimizer in ("sgd", "nag"):
        optimizer_params["momentum"] = cfg.momentum
    # Module.fit logs each epoch's metrics: worker 0's are enough
    module = mx.mod.Module(symbol, context=ctx_list, logger=logging if lead else _QUIET_LOG)
    module.bind(train_iter.provide_data, train_iter.provide_label)
    module.init_params(default_initializer(), arg_params=arg_params, aux_params=aux_params, allow_missing=False)
    with _update_on_kvstore(group.update_on_kvstore):
        module.init_optimizer(kvstore=group.kvstore if group.dist or len(ctx_list) > 1 else "local",
                              optimizer=cfg.optimizer, optimizer_params=optimizer_params)
    if group.dist and group.sync:  # start from worker 0's weights (the kvstore was initialised from them)
        arg, aux = module.get_params()
        for name, array in arg.items():
            group.kvstore.pull(name, out=array)
        module.set_params(arg, aux)
    if resumed and optimizer_state:
        restore_updater_state(module_updaters(module), *optimizer_state, source=f"{prefix}-{begin_epoch:04d}")
        module._optimizer.num_update = begin_epoch * iters
    timer = {"tic": time.time(), "train": 0.0, "metric": None}

    def on_batch(param):
        timer["metric"] = dict(param.eval_metric.get_name_value())
        if param.nbatch == iters - 1:
            timer["train"] = time.time() - timer["tic"]

    def on_eval(param):
        epoch = param.epoch + 1
        test = dict(param.eval_metric.get_name_value())
        total = data.num_test
        train = timer["metric"] or {}
        lr = group.learning_rate(module._optimizer.learning_rate, scheduler, epoch * iters)
        recorder.end_epoch(epoch, lr, train.get("cross-entropy", float("nan")),
                           train.get("accuracy", float("nan")), iters * group.grad_batch(cfg.batch_size),
                           timer["train"],
                           time.time() - timer["tic"], test["cross-entropy"],
                           int(round(test["accuracy"] * total)), total)
        _save(module, prefix, epoch, dict(history=recorder.history.records, recipe=cfg.recipe_fields(),
                                          data_source=data.dataset.source))
        group.barrier()  # the other workers wait for this checkpoint
        timer["tic"] = time.time()

    def wait_for_lead(_epoch, _symbol, _arg, _aux):
        timer["tic"] = time.time()
        group.barrier()  # while worker 0 evaluates and checkpoints

    batch_callbacks = [on_batch]
    if cfg.progress and lead:
        batch_callbacks.append(mx.callback.Speedometer(cfg.batch_size, frequent=100, auto_reset=False))
    metrics = mx.metric.create(["acc", "ce"])
    if begin_epoch < cfg.epochs:
        with _quiet_module_warnings():
            # worker 0 alone evaluates (and checkpoints, in on_eval)
            module.fit(train_iter, eval_data=test_iter if lead else None, eval_metric=metrics,
                       begin_epoch=begin_epoch, num_epoch=int(cfg.epochs), batch_end_callback=batch_callbacks,
                       eval_end_callback=on_eval, epoch_end_callback=None if lead else wait_for_lead)
    return end_job(group, module.get_params()[0],
                   lambda extra: _report(cfg, data, recorder, prefix, begin_epoch, ctx_list, extra), echo,
                   key=FINGERPRINT_NAME)


def _report(cfg, data, recorder, prefix, begin_epoch, ctx_list, extra):
    """Worker 0, at the end: the model's ``model.json``, then metrics (with ``extra``) and plots."""
    last_epoch = latest_checkpoint(cfg.save_dir)
    write_model_meta(prefix, last_epoch[1] if last_epoch else begin_epoch,
                     data.model_meta(cfg, "module", symbol_inputs=["data"]))
    drop_stale_derived(cfg.save_dir)

    model = load_model(cfg.save_dir, ctx_list[:1])
    last = recorder.history.last
    total = data.num_test
    if last is not None and last["epoch"] == cfg.epochs:
        test_loss, test_correct = last["test_loss"], int(round(last["test_acc"] * total))
    else:  # a checkpoint without its history (from elsewhere) that was already complete
        test_loss, test_correct, total = evaluate(model.net, data.test, ctx_list[:1])
    return recorder.finish(test_loss, test_correct, total,
                           model_files=[prefix + "-symbol.json", f"{prefix}-{model.epoch:04d}.params"],
                           stn_sample=data.explained_sample(model), **extra)
