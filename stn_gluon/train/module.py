"""Training the symbolic STN classifier with ``mx.mod.Module.fit`` (``stn-gluon train-symbol``).

Shares everything but the loop with the Gluon trainer: the run's steps (:mod:`stn_gluon.train.steps`:
start, save dir, recorder, optimizer arguments, the end of a distributed job), the configuration and LR
schedule (:mod:`stn_gluon.train.recipes`, :mod:`stn_gluon.train.schedule`), the in-memory batches and
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
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import mxnet as mx

from .._runtime import mxnet_internals
from .._runtime.errors import CheckpointError, StnGluonError, mxnet_message
from .._runtime.files import atomic_path, write_json
from ..export.saved import DEFAULT_PREFIX, load_model, resolve_model, write_model_meta
from ..nn.architecture import default_initializer
from ..symbol.stn_symbol import get_symbol_for  # type: ignore[import-not-found]  # installed from symbol/
from .distributed import FINGERPRINT_NAME
from .gluon import evaluate
from .optstate import module_updaters, restore_updater_state, updater_state
from .recipes import TrainConfig, resolve_architecture
from .reporting import History, RunRecorder, check_recipe
from .runs import SetAside, drop_stale_derived
from .steps import (PreparedData, Run, distributed_info, final_results, make_recorder, nothing_to_resume,
                    open_save_dir, optimizer_params, release_workers, resume_state, start_run, wait_for_lead)

__all__ = ["BatchIter", "fit_module", "latest_checkpoint"]

log = logging.getLogger(__name__)
STATE_FILE = "train_state.json"


class BatchIter(mx.io.DataIter):
    """``mx.io.DataIter`` over :class:`stn_gluon.data.mnist.ArrayBatches`, with optional augmentation.

    Yields ``DataBatch(data=[(N, C, H, W)], label=[(N,)])``. ``reset()`` moves to
    the next epoch (Module.fit calls it after each one), which reshuffles and
    redraws the augmentation deterministically per epoch.
    """

    def __init__(self, batches: Any, prepared: Optional[PreparedData] = None, seed: int = 0, epoch: int = 0) -> None:
        super().__init__(batches.batch_size)
        self.batches, self.prepared, self.seed = batches, prepared, seed
        self.epoch = epoch
        shape = (batches.batch_size,) + batches.data.shape[1:]
        self.provide_data = [mx.io.DataDesc("data", shape)]
        self.provide_label = [mx.io.DataDesc("softmax_label", (batches.batch_size,))]
        self._start()

    def _start(self) -> None:
        if self.prepared is not None:
            self.prepared.set_epoch(self.epoch, self.seed)
        self._it = iter(self.batches)

    def reset(self) -> None:
        if self.prepared is not None:
            self.epoch += 1
        self._start()

    def next(self) -> Any:
        data, label = next(self._it)  # full batches only: ArrayBatches discards or divides evenly
        if self.prepared is not None and self.prepared.augment is not None:
            data = self.prepared.augment(data)
        return mx.io.DataBatch([data], [label])


def _epochs_in(prefix: str) -> List[int]:
    return sorted(int(m.group(1)) for f in glob.glob(glob.escape(prefix) + "-*.params")
                  if (m := re.search(r"-(\d{4})\.params$", f)))


def latest_checkpoint(save_dir: str) -> Optional[Tuple[str, int]]:
    """``(prefix, epoch)`` of the newest Module checkpoint in ``save_dir``, or ``None``."""
    prefix = os.path.join(save_dir, DEFAULT_PREFIX)
    epochs = _epochs_in(prefix)
    return (prefix, epochs[-1]) if epochs and os.path.isfile(prefix + "-symbol.json") else None


def _save(module: Any, prefix: str, epoch: int, state: Dict[str, Any]) -> None:
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


def _optimizer_state(prefix: str, epoch: int) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
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


class Resumed(NamedTuple):
    """A Module checkpoint read to continue from (:func:`_load_resume`)."""
    arg_params: Dict[str, Any]
    aux_params: Dict[str, Any]
    optimizer_state: Optional[Tuple[Dict[str, Any], Dict[str, Any]]]
    history: History
    epoch: int


def _load_resume(run: Run, symbol: Any) -> Optional[Resumed]:
    """Read the Module checkpoint ``cfg.resume`` names (``"auto"``: the save dir's latest); ``None`` to start
    from scratch."""
    cfg = run.cfg
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        found = latest_checkpoint(run.save_dir)
        if found is None:
            nothing_to_resume(run, "Module checkpoint")
            return None
        prefix, epoch = found
    else:
        prefix, epoch = resolve_model(cfg.resume)
    history = _resume_history(cfg, prefix, epoch)
    try:
        saved_sym, arg, aux = mx.model.load_checkpoint(prefix, epoch)
    except (mx.base.MXNetError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {prefix}-{epoch:04d}.params is damaged ({mxnet_message(err)})") from None
    if sorted(saved_sym.list_arguments()) != sorted(symbol.list_arguments()):
        raise CheckpointError(f"checkpoint {prefix}-symbol.json is another network than {cfg.model}")
    return Resumed(arg, aux, _optimizer_state(prefix, epoch), history, epoch)


def _resume_history(cfg: TrainConfig, prefix: str, epoch: int) -> History:
    """The history up to ``epoch`` from the ``train_state.json`` beside ``prefix`` (empty if there is none),
    after checking that it was made with ``cfg``'s recipe."""
    state_file = os.path.join(os.path.dirname(prefix), STATE_FILE)
    if not os.path.isfile(state_file):
        return History()
    try:
        with open(state_file) as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{state_file} is damaged ({err})") from None
    check_recipe(cfg.recipe_differences(state.get("recipe", {})), prefix)
    return History([r for r in state.get("history", []) if r["epoch"] <= epoch])


class _quiet_module_warnings(logging.Filter):
    """Module.fit re-binds and re-initialises what we prepared (for --resume) and warns each time."""

    NOISE = ("Already bound", "Parameters already initialized", "optimizer already initialized")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)

    def __enter__(self) -> "_quiet_module_warnings":
        logging.getLogger().addFilter(self)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message="|".join(self.NOISE))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._warnings.__exit__(*exc)
        logging.getLogger().removeFilter(self)


_QUIET_LOG = logging.getLogger("stn_gluon.train.module.other_workers")
_QUIET_LOG.setLevel(logging.WARNING)


class _update_on_kvstore:
    """Module reads where to run the optimizer from ``MXNET_UPDATE_ON_KVSTORE`` (None: leave it as it is)."""

    def __init__(self, on: Optional[bool]) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.saved = os.environ.get("MXNET_UPDATE_ON_KVSTORE")
        if self.on is not None:
            os.environ["MXNET_UPDATE_ON_KVSTORE"] = "1" if self.on else "0"

    def __exit__(self, *exc: Any) -> None:
        if self.saved is None:
            os.environ.pop("MXNET_UPDATE_ON_KVSTORE", None)
        else:
            os.environ["MXNET_UPDATE_ON_KVSTORE"] = self.saved


def _check_config(cfg: TrainConfig) -> None:
    """Refuse, with one line, what the Module trainer cannot train (before anything starts); a network it cannot
    express is refused by :func:`~stn_gluon.symbol.get_symbol_for`, also before anything is written."""
    if cfg.epochs != int(cfg.epochs):
        raise StnGluonError(f"train-symbol: Module.fit trains whole epochs only, got epochs {cfg.epochs}",
                            params=("epochs",))


def _check_input(symbol: Any, shape: Tuple[int, ...]) -> None:
    try:
        symbol.infer_shape(data=shape)
    except mx.base.MXNetError as err:
        raise StnGluonError(f"the network does not accept input {shape[1:]} ({mxnet_message(err)})") from None


def fit_module(cfg: TrainConfig, dataset: Any = None, echo: Callable[[str], None] = print,
               symbol: Any = None) -> Dict[str, Any]:
    """Train the network of ``cfg`` (or ``symbol``) with ``Module.fit``; returns the metrics dict.

    The graph is :func:`~stn_gluon.symbol.get_symbol_for` of the architecture
    the Gluon trainer would build (:func:`~stn_gluon.train.recipes.resolve_architecture`);
    a configuration the Module path cannot express is refused with one line.
    A distributed job ends as :func:`~stn_gluon.train.gluon.fit`'s does.
    """
    _check_config(cfg)
    run = start_run(cfg, dataset, echo)  # the run's own config: cfg is left as it is
    if symbol is None:  # the network `stn-gluon train` builds with these settings, or a one-line refusal
        symbol = get_symbol_for(resolve_architecture(run.cfg, run.data.input_shape, run.data.num_classes,
                                                     run.data.digits))
    _check_input(symbol, (run.cfg.batch_size,) + tuple(run.data.input_shape))
    with open_save_dir(run) as previous:  # overwrite: the old run is kept aside until the first checkpoint
        recorder = make_recorder(run, "module")
        resumed = _load_resume(run, symbol)
        begin_epoch = resumed.epoch if resumed else 0
        if resumed:
            recorder.history = resumed.history
        prefix = os.path.join(run.save_dir, DEFAULT_PREFIX)
        recorder.start(f"{prefix}-{begin_epoch:04d}.params" if resumed else None, begin_epoch)

        train_iter = BatchIter(run.data.train, run.data, seed=run.cfg.seed, epoch=begin_epoch)
        scheduler = run.group.lr_scheduler(run.cfg, len(run.data.train))
        module = _make_module(run, symbol, train_iter, scheduler, resumed)
        if begin_epoch < run.cfg.epochs:
            _train(run, module, train_iter, _EpochEnds(run, module, recorder, scheduler, previous), begin_epoch)

    identical = run.group.compare_weights(module.get_params()[0], key=FINGERPRINT_NAME)
    if not run.lead:
        return wait_for_lead(run, identical)
    metrics = _report(run, recorder, begin_epoch, distributed_info(run, identical))
    release_workers(run)
    return metrics


def _make_module(run: Run, symbol: Any, train_iter: BatchIter, scheduler: Any,
                 resumed: Optional[Resumed]) -> mx.mod.Module:
    """The bound Module with its weights (initialised, or resumed) and its optimizer (state resumed too)."""
    cfg, group = run.cfg, run.group
    iters = len(run.data.train)
    begin_epoch = resumed.epoch if resumed else 0
    params = optimizer_params(cfg, scheduler, begin_num_update=begin_epoch * iters,
                              rescale_grad=1.0 / group.grad_batch(cfg.batch_size))
    # Module.fit logs each epoch's metrics: worker 0's are enough
    module = mx.mod.Module(symbol, context=run.ctx_list, logger=logging if run.lead else _QUIET_LOG)
    module.bind(train_iter.provide_data, train_iter.provide_label)
    module.init_params(default_initializer(), arg_params=resumed.arg_params if resumed else None,
                       aux_params=resumed.aux_params if resumed else None, allow_missing=False)
    with _update_on_kvstore(group.update_on_kvstore):
        module.init_optimizer(kvstore=group.kvstore if group.dist or len(run.ctx_list) > 1 else "local",
                              optimizer=cfg.optimizer, optimizer_params=params)
    if group.dist and group.sync:  # start from worker 0's weights (the kvstore was initialised from them)
        arg, aux = module.get_params()
        for name, array in arg.items():
            group.kvstore.pull(name, out=array)
        module.set_params(arg, aux)
    if resumed and resumed.optimizer_state:
        arrays, info = resumed.optimizer_state
        restore_updater_state(module_updaters(module), arrays, info,
                              source=os.path.join(run.save_dir, f"{DEFAULT_PREFIX}-{begin_epoch:04d}"))
        mxnet_internals.module_optimizer(module).num_update = begin_epoch * iters
    return module


class _EpochEnds:
    """What happens between Module.fit's epochs (its callbacks): worker 0 records the epoch and checkpoints it,
    the other workers wait for that."""

    def __init__(self, run: Run, module: Any, recorder: RunRecorder, scheduler: Any, previous: SetAside) -> None:
        self.run, self.module, self.recorder, self.scheduler = run, module, recorder, scheduler
        self.previous = previous  # overwrite: the old run's files, deleted once this one has a checkpoint
        self.iters = len(run.data.train)
        self.prefix = os.path.join(run.save_dir, DEFAULT_PREFIX)
        self.tic, self.train_seconds = time.time(), 0.0
        self.train_metric: Dict[str, float] = {}

    def batch_end(self, param: Any) -> None:
        """After each batch: keep the training metric, and the time when the epoch's last batch is done."""
        self.train_metric = dict(param.eval_metric.get_name_value())
        if param.nbatch == self.iters - 1:
            self.train_seconds = time.time() - self.tic

    def tested(self, param: Any) -> None:
        """Worker 0, the epoch tested: record it, checkpoint it, then let the other workers go on."""
        run, epoch = self.run, param.epoch + 1
        test = dict(param.eval_metric.get_name_value())
        total = run.data.num_eval
        lr = run.group.learning_rate(mxnet_internals.module_optimizer(self.module).learning_rate, self.scheduler,
                                     epoch * self.iters)
        self.recorder.end_epoch(epoch, lr, self.train_metric.get("cross-entropy", float("nan")),
                                self.train_metric.get("accuracy", float("nan")),
                                self.iters * run.group.grad_batch(run.cfg.batch_size), self.train_seconds,
                                time.time() - self.tic, test["cross-entropy"],
                                int(round(test["accuracy"] * total)), total)
        _save(self.module, self.prefix, epoch, resume_state(run, self.recorder))
        self.previous.discard()
        run.group.barrier()  # the other workers wait for this checkpoint
        self.tic = time.time()

    def wait_for_lead(self, *_checkpoint: Any) -> None:
        """A worker other than worker 0, at the end of an epoch: wait while worker 0 tests and checkpoints."""
        self.tic = time.time()
        self.run.group.barrier()


def _train(run: Run, module: Any, train_iter: BatchIter, ends: _EpochEnds, begin_epoch: int) -> None:
    """``Module.fit`` from ``begin_epoch`` to the last epoch; worker 0 alone tests (and checkpoints)."""
    batch_callbacks: List[Callable[[Any], None]] = [ends.batch_end]
    if run.cfg.progress and run.lead:
        batch_callbacks.append(mx.callback.Speedometer(run.cfg.batch_size, frequent=100, auto_reset=False))
    with _quiet_module_warnings():
        module.fit(train_iter, eval_data=BatchIter(run.data.eval) if run.lead else None,
                   eval_metric=mx.metric.create(["acc", "ce"]), begin_epoch=begin_epoch,
                   num_epoch=int(run.cfg.epochs), batch_end_callback=batch_callbacks,
                   eval_end_callback=ends.tested, epoch_end_callback=None if run.lead else ends.wait_for_lead)


def _report(run: Run, recorder: RunRecorder, begin_epoch: int, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Worker 0, at the end: the model's ``model.json``, then metrics (with ``extra``) and plots."""
    cfg, data = run.cfg, run.data
    prefix = os.path.join(run.save_dir, DEFAULT_PREFIX)
    last_epoch = latest_checkpoint(run.save_dir)
    write_model_meta(prefix, last_epoch[1] if last_epoch else begin_epoch,
                     data.model_meta(cfg, "module", symbol_inputs=["data"]))
    drop_stale_derived(run.save_dir)
    model = load_model(run.save_dir, run.ctx_list[:1])  # the checkpoint is the model: nothing else exported
    # a checkpoint without its history (from elsewhere) that was already complete: test it here
    test, reported = final_results(run, recorder, lambda batches: evaluate(model.net, batches, run.ctx_list[:1]))
    return recorder.finish(*test, model_files=[prefix + "-symbol.json", f"{prefix}-{model.epoch:04d}.params"],
                           stn_sample=data.explained_sample(model), **dict(reported, **extra))
