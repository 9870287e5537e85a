"""The learning-rate schedule of a run and how its epochs are cut into batches.

Both trainers (Gluon and Module) step :func:`make_lr_scheduler`'s schedule once
per batch; :func:`epoch_lengths` says how many batches each epoch has (a
fractional number of epochs cuts the last one short, and the schedule ends
with it).
"""
from typing import TYPE_CHECKING, Any, List

from .._runtime.compat import import_gluoncv
from .._runtime.errors import ConfigError

if TYPE_CHECKING:  # the config's module imports this one's importer (distributed): typing only, no cycle
    from .recipes import TrainConfig

__all__ = ["make_lr_scheduler", "make_server_lr_scheduler", "epoch_lengths"]


def make_lr_scheduler(cfg: "TrainConfig", iters_per_epoch: int) -> Any:
    """Linear warm-up then ``cfg.lr_mode`` decay, as gluoncv ``LRSequential``; per-iteration.

    The warm-up lasts ``cfg.warmup_epochs``, but at most a quarter of the run
    (of the first cycle, if there is one). With ``lr_mode="cosine"`` and
    ``0 < first_cycle_epochs < epochs``, the cosine first decays to 0 over the
    first cycle, then restarts at ``cfg.lr`` and decays over the remaining
    epochs (a warm restart, as in SGDR): a well-converged model early, the
    best one at the end.
    """
    gluoncv = import_gluoncv()
    LRScheduler, LRSequential = gluoncv.utils.LRScheduler, gluoncv.utils.LRSequential

    def niters(epochs: float) -> int:
        return int(round(epochs * iters_per_epoch))

    first = cfg.first_cycle_epochs if cfg.lr_mode == "cosine" and 0 < cfg.first_cycle_epochs < cfg.epochs else 0
    warm = min(cfg.warmup_epochs, (first or cfg.epochs) / 4)
    main_epochs = cfg.epochs - warm - first
    steps = [e - warm for e in cfg.step_epochs()]
    mode = "step" if cfg.lr_mode == "constant" else cfg.lr_mode
    parts = []
    if warm > 0:
        parts.append(LRScheduler("linear", base_lr=cfg.lr / 10, target_lr=cfg.lr, niters=niters(warm)))
    if first:
        parts.append(LRScheduler("cosine", base_lr=cfg.lr, target_lr=0, niters=niters(first - warm)))
        main_epochs += warm
    parts.append(LRScheduler(mode, base_lr=cfg.lr, target_lr=0,
                             niters=niters(main_epochs),
                             iters_per_epoch=iters_per_epoch,
                             step_iter=([niters(s) for s in steps] if cfg.lr_mode == "step" else [10 ** 12]),
                             step_factor=0.1 if cfg.lr_mode == "step" else 1.0))
    return LRSequential(parts)


def make_server_lr_scheduler(cfg: "TrainConfig", iters_per_epoch: int) -> Any:
    """The schedule of :func:`make_lr_scheduler` from MXNet's own schedulers (``mx.lr_scheduler``).

    For ``dist_async``, whose servers run the optimizer: they receive it
    pickled and unpickle it while ``import mxnet`` is still going on, when
    gluoncv cannot be imported. Same warm-up and decay (counted in
    updates, MXNet's convention); a warm restart (``first_cycle_epochs``)
    has no MXNet form and is refused.
    """
    import mxnet as mx  # lazy: the launcher imports this module (through distributed) and must not load MXNet

    if cfg.lr_mode == "cosine" and 0 < cfg.first_cycle_epochs < cfg.epochs:
        raise ConfigError("first_cycle_epochs", "(a warm restart) is not available with kvstore dist_async")
    total = max(1, int(round(cfg.epochs * iters_per_epoch)))
    warm = min(int(round(min(cfg.warmup_epochs, cfg.epochs / 4) * iters_per_epoch)), total - 1)
    common = dict(base_lr=cfg.lr, warmup_steps=warm, warmup_begin_lr=cfg.lr / 10)
    sched = mx.lr_scheduler
    if cfg.lr_mode == "cosine":
        return sched.CosineScheduler(total, final_lr=0, **common)
    if cfg.lr_mode in ("poly", "linear"):
        return sched.PolyScheduler(total, pwr=2 if cfg.lr_mode == "poly" else 1, final_lr=0, **common)
    if cfg.lr_mode == "step" and cfg.step_epochs():
        steps = sorted({max(warm + 1, int(round(e * iters_per_epoch))) for e in cfg.step_epochs()})
        return sched.MultiFactorScheduler(steps, factor=0.1, **common)
    return sched.FactorScheduler(10 ** 12, factor=1.0, **common)


def epoch_lengths(epochs: float, batches_per_epoch: int) -> List[int]:
    """Batches in each epoch of a run of ``epochs`` epochs (at least one batch in all).

    A fractional ``epochs`` cuts the last epoch short: ``epoch_lengths(1.5, 100)``
    is ``[100, 50]``; the schedule of :func:`make_lr_scheduler` ends with it.
    """
    total = max(1, int(round(epochs * batches_per_epoch)))
    full, rest = divmod(total, batches_per_epoch)
    return [batches_per_epoch] * full + ([rest] if rest else [])
