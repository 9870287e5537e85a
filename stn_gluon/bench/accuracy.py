"""Time to accuracy (``stn-gluon bench time-to-accuracy``): wall seconds of a training run to a test accuracy."""
import tempfile
import time
from typing import Any, Callable, Dict, Optional

__all__ = ["time_to_accuracy"]


def time_to_accuracy(target: float = 0.99, data_dir: Optional[str] = None, echo: Callable = print,
                     **overrides: Any) -> dict:
    """Wall seconds from the start of a default training run (data on disk) to test accuracy >= ``target``.

    ``overrides``: :class:`~stn_gluon.recipes.TrainConfig` fields. Returns a
    dict: ``seconds`` and ``epoch`` when the target was reached (``None`` if
    the run ended without reaching it), ``test_acc`` then, ``epochs_run``,
    ``data_source`` and the run's ``recipe``.
    """
    from ..data import load_mnist
    from ..recipes import TrainConfig
    from ..training import fit

    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        dataset = load_mnist(data_dir)
        reached: Dict[str, Any] = {}

        def on_epoch(record: dict) -> bool:
            if record["test_acc"] >= target and not reached:
                reached.update(seconds=time.perf_counter() - tic, epoch=record["epoch"], test_acc=record["test_acc"])
                return True
            return False

        cfg = TrainConfig(save_dir=tmp, progress=False, data_dir=data_dir, **overrides)
        metrics = fit(cfg, dataset=dataset, echo=echo, on_epoch=on_epoch)
    return dict(target=target, seconds=reached.get("seconds"), epoch=reached.get("epoch"),
                test_acc=reached.get("test_acc"), data_source=dataset.source, epochs_run=metrics["epochs"],
                recipe=cfg.recipe_fields())
