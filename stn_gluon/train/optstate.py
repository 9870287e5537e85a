"""Optimizer state as named arrays plus JSON: saved and restored without pickle.

MXNet's own ``Trainer.save_states`` / ``Module.save_optimizer_states`` pickle
the updater (and the optimizer); unpickling a file someone sent you can run
arbitrary code. Here the per-parameter states (momentum, Adam's mean and
variance, ...) go into an ``mx.nd.save`` dict, whose loader ``mx.nd.load`` is
not pickle, and the counters the optimizer keeps (``num_update``, the
per-parameter update counts Adam's bias correction uses) into JSON. Restored
into a freshly built optimizer of the same recipe, training continues exactly
as it would have.
"""
import logging
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

from .._runtime import mxnet_internals as internals
from .._runtime.errors import CheckpointError

__all__ = ["trainer_updaters", "module_updaters", "updater_state", "restore_updater_state"]

STATE_FORMAT = 1
log = logging.getLogger(__name__)


def trainer_updaters(trainer: mx.gluon.Trainer) -> List[Any]:
    """The updaters of a Gluon ``Trainer`` (one per context, or the kvstore's), initialised.

    A trainer told to update locally (``update_on_kvstore=False``, as in a
    synchronous distributed job) has them from the start: its kvstore is left
    for the first step to set up. (Set up here, right after a resumed job
    loaded its checkpoint, the dist kvstore's server aborted with "init 9
    first" on loopback, MXNet 1.9.1; set up by the first step it never did.)
    """
    kvstore, update_on_kvstore = internals.trainer_kvstore_args(trainer)
    if update_on_kvstore is False:
        return internals.trainer_updaters(trainer)
    if update_on_kvstore and "dist" in getattr(kvstore, "type", ""):
        return []  # dist_async: the servers hold the optimizer
    store, updates_on_store = internals.init_trainer_kvstore(trainer)
    if updates_on_store:
        return _kvstore_updaters(store)
    return internals.trainer_updaters(trainer)


def _kvstore_updaters(kvstore: Any) -> List[Any]:
    """The kvstore's updater; none where the servers hold it (a ``dist_async`` job)."""
    updater = internals.kvstore_updater(kvstore)
    return [updater] if updater is not None else []


def module_updaters(module: mx.mod.Module) -> List[Any]:
    """The updater of a ``Module`` whose optimizer is initialised (its own, or the kvstore's)."""
    on_kvstore, kvstore, updater = internals.module_update_target(module)
    return _kvstore_updaters(kvstore) if on_kvstore else [updater]


def _flatten(state: Any, arrays: List[Any]) -> Any:
    """A state (None, NDArray, or nested tuples of them) -> its JSON layout; arrays appended."""
    if state is None:
        return None
    if isinstance(state, mx.nd.NDArray):
        arrays.append(state)
        return len(arrays) - 1
    if isinstance(state, (tuple, list)):
        return [_flatten(s, arrays) for s in state]
    raise CheckpointError(f"optimizer state of type {type(state).__name__} cannot be saved")


def _unflatten(layout: Any, arrays: Dict[str, Any]) -> Any:
    """The inverse of :func:`_flatten`, on fresh copies (each updater updates its own in place)."""
    if layout is None:
        return None
    if isinstance(layout, int):
        return arrays[f"s{layout}"].copy()
    return tuple(_unflatten(l, arrays) for l in layout)


def _param_name(opt: Any, key: Any) -> Optional[str]:
    """The parameter an optimizer index stands for (Gluon: ``param_dict``; Module: ``idx2name``), or None."""
    param = getattr(opt, "param_dict", {}).get(key)
    if param is not None:
        return param.name
    return getattr(opt, "idx2name", {}).get(key)


def updater_state(updaters: List[Any]) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(arrays, info)``: ``{name: NDArray}`` for ``mx.nd.save`` and a JSON-able dict.

    The states of the first updater are saved (the others hold copies of them on
    other contexts), with the optimizer's update counters. ``None`` without an
    updater here (a ``dist_async`` job: the optimizer runs on the servers).
    """
    if not updaters:
        return None
    updater = updaters[0]
    opt = updater.optimizer
    flat: List[Any] = []
    entries = []
    for key in sorted(updater.states, key=lambda k: (isinstance(k, str), k)):
        entries.append(dict(key=key, name=_param_name(opt, key), layout=_flatten(updater.states[key], flat)))
    arrays = {f"s{i}": a.as_in_context(mx.cpu()) for i, a in enumerate(flat)}
    counts = {str(dev): [[k, v] for k, v in c.items()] for dev, c in internals.update_counts(opt).items()}
    info = dict(format=STATE_FORMAT, optimizer=type(opt).__name__.lower(), num_update=int(opt.num_update),
                begin_num_update=int(opt.begin_num_update), counts=counts, states=entries)
    return arrays, info


def restore_updater_state(updaters: List[Any], arrays: Dict[str, Any], info: Dict[str, Any],
                          source: str = "checkpoint") -> None:
    """Put the state :func:`updater_state` saved into ``updaters`` (and their optimizer).

    Raises :class:`CheckpointError` (naming ``source``) if the state does not
    belong to this optimizer or is incomplete. Without an updater here (a
    ``dist_async`` job) there is nothing to restore into: the servers' state
    starts afresh, as a warning says.
    """
    if not updaters:
        log.warning("%s: the optimizer runs on the servers (dist_async); its state (momentum...) starts afresh",
                    source)
        return
    try:
        if info.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown optimizer state format {info.get('format')!r}")
        opt = updaters[0].optimizer
        if info["optimizer"] != type(opt).__name__.lower():
            raise ValueError(f"it holds {info['optimizer']} state, this run uses {type(opt).__name__.lower()}")
        for e in info["states"]:
            name = _param_name(opt, e["key"])
            if e.get("name") and name and e["name"] != name:
                raise ValueError(f"its state #{e['key']} is for {e['name']}, here that is {name}")
        per_updater = [{e["key"]: _unflatten(e["layout"], arrays) for e in info["states"]} for _ in updaters]
        counts = {int(dev): {k: int(v) for k, v in pairs} for dev, pairs in info["counts"].items()}
        num_update = int(info["num_update"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: optimizer state does not fit this run ({err})") from None
    for updater, states in zip(updaters, per_updater):
        updater.optimizer = opt
        updater.states = states
        updater.states_synced = dict.fromkeys(states, False)  # copied to each weight's context on first use
    opt.num_update = num_update
    internals.set_update_counts(opt, counts)
