"""Every use of a private MXNet API in this package, each behind one small function.

MXNet 1.9.1 has no public way to do any of what follows; each function says why it needs the private name and
was checked against MXNet 1.9.1 (the version ``setup.py`` pins). ``tests/test_mxnet_internals.py`` runs each one
on a real Trainer, Module, Optimizer or kvstore and fails loudly, naming the function, if MXNet changes under it.
Nothing here writes into MXNet's memory: these are Python attributes of MXNet's Python objects.

MXNet itself is imported only where a function needs it (``import mxnet`` here would make building the
command-line parser load MXNet).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["CHECKED_WITH", "barrier", "create_kvstore", "trainer_kvstore_args", "trainer_updaters",
           "init_trainer_kvstore", "kvstore_updater", "module_optimizer", "module_update_target", "update_counts",
           "set_update_counts", "load_param_data", "clear_cached_graph", "onnx_graph_class",
           "onnx_converter_inputs", "gluon_repo_url"]

#: The MXNet versions every function below was checked against.
CHECKED_WITH = ("1.9.1",)


# ------------------------------------------------------------------------------------------------ kvstore

def barrier(kv: Any) -> None:
    """Wait until every worker of ``kv``'s job arrives here.

    ``KVStore._barrier``: 1.9.1 exposes no public barrier (``mx.kv`` has none; Horovod's store has its own).
    Checked with MXNet 1.9.1.
    """
    kv._barrier()


@functools.lru_cache(maxsize=None)
def _confirming_kvstore_class() -> type:
    import mxnet as mx  # lazy: the class derives from MXNet's KVStore, built on first use

    class ConfirmingKVStore(mx.kvstore.KVStore):
        """MXNet's ``KVStore`` whose ``init`` and ``broadcast`` have finished on the servers when they return."""

        def init(self, key: Any, value: Any) -> None:
            """``init`` that returns only once the servers hold the key.

            MXNet 1.9.1's dist init is worker 0's push followed by a barrier; here worker 0 also waits for every
            operation it queued, that push included (it completes when the server has answered), before a
            second barrier, so no worker can reach the key before the server has it.
            """
            super().init(key, value)
            if self.rank == 0:
                mx.nd.waitall()
            barrier(self)

        def broadcast(self, key: Any, value: Any, out: Any, priority: int = 0) -> None:
            """``broadcast`` (worker 0's ``value`` into every worker's ``out``) that has finished when it returns.

            Gluon's Trainer broadcasts the weights inside the first ``step``, after that step's backward pass,
            and pushes the gradients right after: nothing orders a worker's pull of the weights before its push
            of the same key's gradient. When the push went first, the server's value was already the summed
            gradient when the pull arrived, and that worker started from the gradient instead of the weights
            (seen on loopback, 1 job in 5: the STN regressor, zero-initialised, 1.3 apart between the workers
            after 12 steps).
            """
            self.init(key, value)
            self.pull(key, out=out, priority=priority)
            for array in out if isinstance(out, (list, tuple)) else [out]:
                array.wait_to_read()

    return ConfirmingKVStore


def create_kvstore(name: str) -> Any:
    """``mx.kv.create(name)`` whose ``init`` and ``broadcast`` have finished when they return (see the class).

    Gluon's Trainer and Module call ``kvstore.init`` / ``kvstore.broadcast`` themselves, so the store they are
    given must carry the confirming versions. ``mx.kv.create`` builds a ``KVStore`` around a handle from
    MXNet's C library and 1.9.1 offers no public way to build a subclass around one (a second Python object
    on the same handle would free it twice), so the new store's class is switched to a subclass that adds
    only those two methods: the store is this process's own object, nothing in MXNet is patched. Relies on
    ``mx.kv.create`` returning a plain ``mx.kvstore.KVStore`` for the native stores. Checked with MXNet 1.9.1.
    """
    import mxnet as mx  # lazy: building the parser (which imports the training config) must not load MXNet

    kv = mx.kv.create(name)
    if type(kv) is not mx.kvstore.KVStore:
        raise TypeError(f"mx.kv.create({name!r}) returned a {type(kv).__name__}, not MXNet's KVStore "
                        f"(stn_gluon._runtime.mxnet_internals was checked with MXNet {', '.join(CHECKED_WITH)})")
    kv.__class__ = _confirming_kvstore_class()
    return kv


def kvstore_updater(kv: Any) -> Any:
    """The updater (optimizer and its per-parameter state) a local kvstore applies, or ``None`` (none set, or
    the servers hold it: ``dist_*`` with the optimizer on the kvstore).

    ``KVStore._updater``: 1.9.1 keeps it only there (``save_optimizer_states`` pickles it; we save the state
    without pickle). Checked with MXNet 1.9.1.
    """
    return kv._updater


# ------------------------------------------------------------------------------------------------ Gluon Trainer

def trainer_kvstore_args(trainer: Any) -> Tuple[Any, Optional[bool]]:
    """``(kvstore, update_on_kvstore)`` as given to ``gluon.Trainer`` (before the first step resolves them).

    ``Trainer._kvstore_params``: 1.9.1 keeps the constructor's arguments only there. Checked with MXNet 1.9.1.
    """
    params = trainer._kvstore_params
    return params["kvstore"], params["update_on_kvstore"]


def trainer_updaters(trainer: Any) -> List[Any]:
    """The Trainer's own updaters, one per context (used where the optimizer runs in this process).

    ``Trainer._updaters``: 1.9.1 has no public accessor (``save_states`` pickles them). Checked with MXNet 1.9.1.
    """
    return list(trainer._updaters)


def init_trainer_kvstore(trainer: Any) -> Tuple[Any, Optional[bool]]:
    """Set up the Trainer's kvstore and put its parameters in it now, as its first ``step`` would; returns
    ``(kvstore or None, update_on_kvstore)`` as resolved.

    A resumed run restores the optimizer state before the first step, into the updater that step will use:
    the kvstore's (when it updates) is made only by ``Trainer._init_kvstore`` / ``_init_params``, which 1.9.1
    calls lazily inside ``step`` and exposes no public way to call. Checked with MXNet 1.9.1.
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    return trainer._kvstore, trainer._update_on_kvstore


# ------------------------------------------------------------------------------------------------ Module

def module_optimizer(module: Any) -> Any:
    """The optimizer of a ``Module`` after ``init_optimizer`` (its learning rate, its update count).

    ``Module._optimizer``: 1.9.1's Module has no public accessor. Checked with MXNet 1.9.1.
    """
    return module._optimizer


def module_update_target(module: Any) -> Tuple[bool, Any, Any]:
    """``(update_on_kvstore, kvstore, updater)`` of a ``Module`` after ``init_optimizer``: where its optimizer
    runs (the kvstore's updater, or the Module's own).

    ``Module._update_on_kvstore`` / ``._kvstore`` / ``._updater``: 1.9.1's Module has no public accessor
    (``save_optimizer_states`` pickles them). Checked with MXNet 1.9.1.
    """
    return bool(module._update_on_kvstore), module._kvstore, module._updater


# ------------------------------------------------------------------------------------------------ Optimizer

def update_counts(opt: Any) -> Dict[int, Dict[Any, int]]:
    """The optimizer's per-device, per-parameter update counts (Adam's bias correction reads them).

    ``Optimizer._all_index_update_counts``: 1.9.1 keeps them only there (saved by pickling the optimizer).
    Checked with MXNet 1.9.1.
    """
    return opt._all_index_update_counts


def set_update_counts(opt: Any, counts: Dict[int, Dict[Any, int]]) -> None:
    """Restore :func:`update_counts` (empty: a fresh optimizer's ``{0: {}}``) and point the optimizer's current
    device at the lowest one, as a fresh optimizer does.

    ``Optimizer._all_index_update_counts`` / ``._index_update_count``: no public setter in 1.9.1. Checked with
    MXNet 1.9.1.
    """
    opt._all_index_update_counts = counts or {0: {}}
    opt._index_update_count = opt._all_index_update_counts.setdefault(min(opt._all_index_update_counts), {})


# ------------------------------------------------------------------------------------------------ Gluon blocks

def load_param_data(param: Any, data: Any, ctx: Any) -> None:
    """Initialise a ``gluon.Parameter`` from the array ``data`` on ``ctx`` (shape and dtype checked).

    ``Parameter._load_init``: what ``load_parameters`` uses inside; 1.9.1 has no public way to initialise one
    parameter from an array without a file (``set_data`` needs it initialised first). Checked with MXNet 1.9.1.
    """
    param._load_init(data, ctx)


def clear_cached_graph(block: Any) -> None:
    """Make a hybridized block trace its graph again on its next call (after a change of what it returns).

    ``HybridBlock._clear_cached_op``: 1.9.1 has no public way short of ``hybridize()`` again, which also resets
    its flags. Checked with MXNet 1.9.1.
    """
    block._clear_cached_op()


# ------------------------------------------------------------------------------------------------ ONNX exporter

def onnx_graph_class() -> Any:
    """MXNet's ONNX exporter class, whose ``registry_`` maps opset -> {operator: converter} and whose
    ``create_onnx_graph_proto`` turns a symbol into ONNX nodes.

    ``mxnet.onnx.mx2onnx._export_onnx.MXNetGraph``: ``mx.onnx.export_model`` is the public entry, but it can
    neither register converters for operators it lacks (``GridGenerator``, ``BilinearSampler``,
    ``SpatialTransformer``) nor build a graph proto without writing a file. Checked with MXNet 1.9.1.
    """
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    return MXNetGraph


def onnx_converter_inputs() -> Tuple[Any, Any]:
    """``(get_inputs, get_input_dtypes)``: how MXNet's own converters read a node's name, inputs, attributes
    and input dtypes, so that ours read them the same way.

    ``mxnet.onnx.mx2onnx._op_translations._op_translations_opset13``: the helpers every converter of MXNet's
    exporter uses; not exported elsewhere. Checked with MXNet 1.9.1.
    """
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import get_input_dtypes, get_inputs

    return get_inputs, get_input_dtypes


# ------------------------------------------------------------------------------------------------ Gluon data

def gluon_repo_url(namespace: str, filename: str) -> str:
    """The URL of ``filename`` in Gluon's dataset repository (``MXNET_GLUON_REPO`` honoured), as Gluon's own
    MNIST downloader builds it.

    ``mxnet.gluon.utils._get_repo_file_url``: the public ``gluon.data.vision.MNIST`` downloads it itself, to a
    folder of its choosing and without the all-or-nothing step ``stn_gluon.data.download`` needs.
    Checked with MXNet 1.9.1.
    """
    from mxnet.gluon.utils import _get_repo_file_url

    return str(_get_repo_file_url(namespace, filename))
