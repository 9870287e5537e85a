"""Speed measurements: ``stn-gluon bench speed`` and the inference comparison of ``scripts/bench_inference.py``.

Everything is measured in one run on one machine, side by side: each
competitor (:mod:`stn_gluon.bench.competitors`) in a worker process of its
own, timed in turns with the others (:mod:`stn_gluon.bench.harness`);
warm-up runs are excluded, each figure is the median of several timed
windows, each ratio the median of the ratios within a round. PyTorch is the
peer when it is importable.
"""
import os
import tempfile
from typing import Any, Callable, Dict, Optional

from ..export.onnx import export_onnx
from ..export.saved import load_graph
from .competitors import exported_model
from .harness import Competitor, isolated_rates, ratio
from .memory import peak_training_rss
from .reports import inference_lines, speed_lines
from .torch_peer import have_torch

__all__ = ["speed_report", "inference_report", "train_ratios", "USER_LOOPS"]

#: The user-written loops, compared with PyTorch and with each other (see :mod:`stn_gluon.bench.competitors`).
USER_LOOPS = ("gluon_user_loop", "gluon_user_loop_fast")


def _train_specs(batch: int, torch: bool) -> dict:
    """The training competitors at ``batch``, all timed in the same rounds."""
    specs = {"gluon imperative": Competitor("gluon_train", dict(batch=batch, hybridize=False)),
             "gluon hybridized": Competitor("gluon_train", dict(batch=batch)),
             "module": Competitor("module_train", dict(batch=batch)),
             "gluon_user_loop": Competitor("gluon_user_loop", dict(batch=batch), plain_mxnet=True),
             "gluon_user_loop_fast": Competitor("gluon_user_loop_fast", dict(batch=batch))}
    if torch:
        specs["pytorch eager"] = Competitor("torch_train", dict(batch=batch))
    return specs


def train_ratios(rounds: dict, batch: int) -> dict:
    """The training ratios reported at ``batch``, from every round's rates ``{name: [rate, ...]}``.

    Each Gluon loop against PyTorch, and the fast user loop against the plain one.
    """
    pairs = [(name, "pytorch eager") for name in ("gluon hybridized",) + USER_LOOPS] + [USER_LOOPS[::-1]]
    return {f"train {batch}: {name} / {peer}": ratio(rounds, name, peer) for name, peer in pairs}


def speed_report(seconds: float = 1.0, repeats: int = 5, data_dir: Optional[str] = None, batches: tuple = (64, 256),
                 echo: Callable[[str], None] = print) -> tuple:
    """Run every speed measurement; returns ``(markdown lines, JSON-able results)``.

    Every competitor runs in a process of its own: two frameworks in one
    process share the cores with each other's idle OpenMP pools, which
    slowed both by up to half here.
    """
    torch = have_torch()
    res: Dict[str, Any] = {"train": {}, "infer": {}, "latency_ms": {}, "scaling_batch": {}, "scaling_size": {}, "ratios": {},
           "threads": os.environ.get("OMP_NUM_THREADS"), "user_loop_threads": {}}

    for b in batches:
        echo(f"training throughput, batch {b}")
        rounds: dict = {}
        settings: dict = {}
        res["train"][b] = isolated_rates(_train_specs(b, torch), b, seconds, repeats, rounds=rounds, settings=settings)
        res["user_loop_threads"] = {name: settings[name]["mxnet_threads"] for name in USER_LOOPS}
        res["ratios"].update(train_ratios(rounds, b))

    with tempfile.TemporaryDirectory() as tmp:
        echo("inference throughput")
        prefix, onnx_path = exported_model(tmp)
        for b in (1, 64, 256):
            specs = {"gluon hybridized": ("gluon_infer", dict(batch=b)),
                     "exported SymbolBlock": ("symbolblock_infer", dict(batch=b, prefix=prefix)),
                     "onnxruntime": ("onnx_infer", dict(batch=b, path=onnx_path))}
            if torch:
                specs["pytorch eager"] = ("torch_infer", dict(batch=b))
            latency: Optional[dict] = {} if b == 1 else None
            rounds = {}
            res["infer"][b] = isolated_rates(specs, b, seconds, repeats, latency=latency, rounds=rounds)
            res["ratios"][f"infer {b}: onnxruntime / pytorch eager"] = ratio(rounds, "onnxruntime", "pytorch eager")
            if latency is not None:
                res["latency_ms"] = latency

    echo("scaling")
    for b in (16, 32, 64, 128, 256, 512, 1024):
        res["scaling_batch"][b] = isolated_rates({"x": ("gluon_train", dict(batch=b))}, b, seconds, repeats)["x"]
    for size in (28, 42, 60, 128):
        res["scaling_size"][size] = isolated_rates(
            {"x": ("gluon_train", dict(batch=64, size=size))}, 64, seconds, repeats)["x"]

    echo("peak memory of a training run")
    res["peak_train_rss_mib"] = peak_training_rss(data_dir)
    return speed_lines(res, torch), res


def inference_report(model: Optional[str] = None, onnx_path: Optional[str] = None, batches: tuple = (1, 64, 256),
                     seconds: float = 1.0, repeats: int = 5, latency_count: int = 300, threads: Optional[int] = None,
                     ort_mode: str = "split", echo: Callable[[str], None] = print) -> tuple:
    """ONNX Runtime against MXNet (the exported model as a hybridized ``SymbolBlock``), same model, same run.

    model: a save dir or export prefix (default: a randomly initialised
    STNNet); onnx_path: its ``.onnx`` file (default: exported to a temporary
    folder). ``threads`` and ``ort_mode`` are ONNX Runtime's
    (:class:`stn_gluon.export.onnx.OnnxModel`). Returns ``(markdown lines,
    JSON-able results)``: throughput per batch, batch-1 latency percentiles.
    """
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            prefix, exported = exported_model(tmp)
        else:
            prefix, exported = model, None
        shape = list(load_graph(prefix).meta.get("input_shape") or [1, 28, 28])
        onnx_path = onnx_path or exported or str(export_onnx(prefix, os.path.join(tmp, "model.onnx")))
        results: Dict[str, Dict[str, dict]] = {"mxnet": {"throughput": {}, "latency_ms": {}}, "onnxruntime": {"throughput": {}, "latency_ms": {}}}
        ratios: Dict[int, Optional[float]] = {}
        for b in batches:
            echo(f"inference, batch {b}")
            specs = {"mxnet": ("symbolblock_infer", dict(batch=b, prefix=prefix, shape=shape)),
                     "onnxruntime": ("onnx_infer", dict(batch=b, path=onnx_path, shape=shape, threads=threads,
                                                        mode=ort_mode))}
            latency: Optional[dict] = {} if b == 1 else None
            rounds: dict = {}
            rates = isolated_rates(specs, b, seconds, repeats, latency=latency, rounds=rounds,
                                   latency_count=latency_count)
            ratios[b] = ratio(rounds, "onnxruntime", "mxnet")
            for name, rate in rates.items():
                results[name]["throughput"][b] = rate
                if latency is not None:
                    results[name]["latency_ms"] = latency[name]
    payload = dict(results=results, ratios=ratios, batches=list(batches), ort_mode=ort_mode, threads=threads,
                   input_shape=shape)
    return inference_lines(payload, model or "random STNNet"), payload
