"""Time to accuracy (``stn-gluon bench time-to-accuracy``): wall seconds from process start to a test accuracy."""
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional

from ..data.mnist import load_mnist
from ..train.gluon import fit
from ..train.recipes import TrainConfig

__all__ = ["time_to_accuracy", "seconds_since_process_start"]


def seconds_since_process_start() -> Optional[float]:
    """Wall seconds since this process started (Linux ``/proc``; ``None`` where it cannot be read)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def time_to_accuracy(target: float = 0.99, data_dir: Optional[str] = None, echo: Callable = print,
                     recipe: str = "default", **overrides: Any) -> dict:
    """Wall seconds from process start (data on disk) to a test accuracy >= ``target``.

    ``seconds`` counts from the start of the process (interpreter, imports,
    data decoding, net building, training, test evaluations: all a user
    waits for); ``startup_seconds`` is the part before this call (imports),
    ``seconds_in_call`` the rest. Where the process start cannot be read,
    ``seconds`` counts from this call. ``recipe`` names one of
    :data:`~stn_gluon.train.recipes.RECIPES`; ``overrides`` are
    :class:`~stn_gluon.train.recipes.TrainConfig` fields that replace its values.
    Returns a dict with the times, the epoch, and the recipe
    (``None`` times if the run ended without reaching the target).
    """
    startup = seconds_since_process_start()
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        dataset = load_mnist(data_dir)
        reached: Dict[str, Any] = {}

        def on_epoch(record: dict) -> bool:
            if record["test_acc"] >= target and not reached:
                reached.update(seconds_in_call=time.perf_counter() - tic, epoch=record["epoch"],
                               test_acc=record["test_acc"])
                return True
            return False

        cfg = TrainConfig.from_recipe(recipe, save_dir=tmp, progress=False, data_dir=data_dir, **overrides)
        metrics = fit(cfg, dataset=dataset, echo=echo, on_epoch=on_epoch)
    in_call = reached.get("seconds_in_call")
    return dict(target=target, seconds=None if in_call is None else in_call + (startup or 0.0),
                startup_seconds=startup, seconds_in_call=in_call, epoch=reached.get("epoch"),
                test_acc=reached.get("test_acc"), data_source=dataset.source, epochs_run=metrics["epochs"],
                recipe_name=recipe, recipe=cfg.recipe_fields())
