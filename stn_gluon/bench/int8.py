"""``stn-gluon bench int8``: fp32 against int8 ONNX Runtime, throughput and test accuracy, trained models.

For each save dir: the model is exported to ONNX (fp32), quantized with
:func:`stn_gluon.export.int8.quantize_onnx` (calibrated on its own training
data), both are scored on the whole test set of the data they were trained on,
and their throughput is timed in turns (fp32, int8, fp32, ...) in this
process at each batch size, ONNX Runtime sessions with the same threads.
Two ratios are given: of wall-clock throughput (what a user sees on a quiet
machine) and of CPU time of the calling thread (steady on a shared machine,
where the wall clock also counts the time other programs hold the core;
single-threaded sessions only). The int8 model is also checked against fp32
on the whole test set (:func:`stn_gluon.quantize.agreement`: largest logit
error relative to fp32's largest |logit|), and the report names the CPU and
the flags that decide ONNX Runtime's int8 kernels (VNNI or not): both the
speed and the error belong to the CPU they were measured on.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .._runtime.errors import StnGluonError
from .._runtime.flags import option, validate_fields
from ..data.distortions import load_dataset
from ..data.mnist import normalize
from ..data.normalization import ChannelValues
from ..export.int8 import (INT8_TARGETS, MAX_ACCURACY_DROP, MAX_ERROR, QuantizeConfig, agreement,
                           calibration_data, compare_speed, cpu_int8_features, describe_cpu,
                           described_dataset, int8_error_verdict, int8_verdict, quantize_onnx)
from ..export.onnx import export_onnx
from ..export.saved import load_graph, resolve_model
from ..train.reporting import machine_info, write_report
from .harness import infer_input

__all__ = ["Int8BenchConfig", "run_int8_bench", "int8_lines", "test_accuracy"]


@dataclass
class Int8BenchConfig:
    """The ``bench int8`` flags."""
    models: str = option("runs/stn_lenet,runs/stn_cifar_resnet20_v1",
                         "comma list of trained models (save dirs or export prefixes)")
    batches: str = option("1,64,256", "comma list of batch sizes to time")
    seconds: float = option(0.5, "length of one timed window", minimum=0, exclusive_minimum=True)
    repeats: int = option(7, "timed windows per figure (median; ratios: median of the per-round ratios)", minimum=1)
    threads: int = option(1, "ONNX Runtime intra-op threads of every session", minimum=1)
    calibration_count: int = option(256, "training images used for calibration", minimum=1)
    int8_target: str = option("any", "the int8 settings: any (7-bit weights, the default export) or vnni "
                                     "(export-onnx --int8-target vnni: full 8-bit weights, for CPUs with VNNI)",
                              choices=("any", "vnni"))
    data_dir: Optional[str] = option(None, "folder with the four MNIST IDX files; none: $STN_GLUON_DATA, "
                                           "~/.mxnet/datasets/mnist, then the embedded sample")
    out: str = option("runs/bench_int8", "where results.md and results.json go")


def test_accuracy(session: Any, images: np.ndarray, labels: np.ndarray, mean: ChannelValues, std: ChannelValues,
                  batch: int = 500) -> float:
    """Top-1 accuracy of an ONNX Runtime session on ``uint8`` test ``images`` (normalised a batch at a time)."""
    name = session.get_inputs()[0].name
    correct = 0
    for i in range(0, len(images), batch):
        logits = session.run(["logits"], {name: normalize(images[i:i + batch], mean, std)})[0]
        correct += int((logits.argmax(1) == labels[i:i + batch]).sum())
    return correct / len(images)


def _bench_model(path: str, cfg: Int8BenchConfig, batches: List[int], tmp: str,
                 echo: Callable[[str], Any]) -> Dict[str, Any]:
    settings = INT8_TARGETS[cfg.int8_target]
    prefix, _ = resolve_model(path)
    meta = load_graph(path).meta
    dataset = described_dataset(prefix) or "mnist"
    label = f"{meta.get('model') or os.path.basename(prefix)} ({os.path.dirname(prefix) or '.'})"
    fp32 = os.path.join(tmp, f"{len(os.listdir(tmp))}-fp32.onnx")
    int8 = fp32.replace("-fp32", "-int8")
    echo(f"{label}: export, quantize ({settings.describe()})")
    export_onnx(path, fp32)
    tic = time.perf_counter()
    x, _, check, check_labels = calibration_data(fp32, cfg.calibration_count, cfg.data_dir, dataset,
                                                 held_back=QuantizeConfig.check_count)
    quantize_onnx(fp32, int8, x, settings=settings)
    quantize_seconds = time.perf_counter() - tic
    held = agreement(fp32, int8, check, check_labels)  # what export-onnx --quantize int8 checks
    data = load_dataset(dataset, cfg.data_dir)
    mean, std = meta["mean"], meta["std"]  # a number, or one per channel
    echo(f"{label}: test accuracy on {data.describe()}")
    agree = agreement(fp32, int8, normalize(data.test_images, mean, std), data.test_labels)
    accuracy = {k: agree[f"{k}_accuracy"] for k in ("fp32", "int8")}
    shape = tuple(meta["input_shape"])
    speed: Dict[int, Dict[str, Any]] = {}
    for batch in batches:
        speed[batch] = compare_speed(fp32, int8, batch, cfg.seconds, cfg.repeats, cfg.threads,
                                     infer_input(batch, shape))
        echo(f"{label}: batch {batch}: fp32 {speed[batch]['fp32']:,.0f}, int8 {speed[batch]['int8']:,.0f} images/s "
             f"({speed[batch]['ratio']:.2f}x; CPU time {speed[batch]['cpu_ratio']:.2f}x)")
    verdict_batch = 64 if 64 in speed else batches[0]
    verdict = (int8_error_verdict(held, MAX_ERROR, MAX_ACCURACY_DROP)
               or int8_verdict(speed[verdict_batch], verdict_batch))
    return dict(model=label, path=path, dataset=dataset, data_source=data.source, accuracy=accuracy,
                max_relative_error=agree["max_relative_error"], top1_agreement=agree["top1_agreement"],
                held_back=held,
                speed=speed, quantize_seconds=quantize_seconds, settings=settings.describe(),
                int8_target=settings.target, verdict=verdict,
                sizes={k: os.path.getsize(p) for k, p in (("fp32", fp32), ("int8", int8))})


def run_int8_bench(cfg: Int8BenchConfig, echo: Callable[[str], Any] = print) -> Tuple[List[str], Dict[str, Any]]:
    """Run ``bench int8`` over ``cfg.models`` -> ``(results.md lines, results)``; also writes them to ``cfg.out``."""
    validate_fields(cfg)
    try:
        batches = [int(b) for b in cfg.batches.split(",") if b.strip()]
    except ValueError:
        raise StnGluonError(f"batches: expected integers like 1,64,256, got {cfg.batches!r}",
                            params=("batches",)) from None
    if not batches or min(batches) < 1:
        raise StnGluonError(f"batches: expected sizes >= 1, got {cfg.batches!r}", params=("batches",))
    models = [m.strip() for m in cfg.models.split(",") if m.strip()]
    for model in models:  # every path checked before minutes of work
        resolve_model(model)
    with tempfile.TemporaryDirectory(prefix="stn-bench-int8-") as tmp:
        results = [_bench_model(m, cfg, batches, tmp, echo) for m in models]
    payload = dict(results=results, batches=batches, threads=cfg.threads, seconds=cfg.seconds,
                   repeats=cfg.repeats, cpu=cpu_int8_features())
    lines = int8_lines(payload)
    write_report(cfg.out, lines, payload)
    return lines, payload


def int8_lines(payload: Dict[str, Any]) -> List[str]:
    """The Markdown report of :func:`run_int8_bench`'s results."""
    info = machine_info()
    cpu = payload.get("cpu")
    lines = [f"CPU: {describe_cpu(cpu) if cpu else 'not recorded'}; ONNX Runtime picks its int8 kernels by "
             f"these flags (without VNNI, 16-bit sums): both tables hold for this CPU", "",
             "### Test accuracy, fp32 and int8 (ONNX Runtime)", "",
             "| model | data | fp32 | int8 | int8 - fp32 (points) | same class | largest logit error "
             "/ largest fp32 logit | the same, held-back training images (export's check) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in payload["results"]:
        a, held = r["accuracy"], r.get("held_back") or {}
        error = f"{100 * r['max_relative_error']:.2f} %" if "max_relative_error" in r else "-"
        same = f"{100 * r['top1_agreement']:.2f} %" if "top1_agreement" in r else "-"
        check = (f"{100 * held['max_relative_error']:.2f} % ({int(held['count'])})" if held else "-")
        lines.append(f"| {r['model']} | {r['data_source']} | {100 * a['fp32']:.2f} % | {100 * a['int8']:.2f} % | "
                     f"{100 * (a['int8'] - a['fp32']):+.2f} | {same} | {error} | {check} |")
    lines += ["", "### Throughput (images/s), int8 against fp32", "",
              "| model | batch | fp32 | int8 | int8 / fp32 (wall clock) | int8 / fp32 (CPU time) |",
              "|---|---|---|---|---|---|"]
    for r in payload["results"]:
        for batch, s in r["speed"].items():
            lines.append(f"| {r['model']} | {batch} | {s['fp32']:,.0f} | {s['int8']:,.0f} | {s['ratio']:.2f}x | "
                         f"{s['cpu_ratio']:.2f}x |")
    lines.append("")
    for r in payload["results"]:
        lines.append(f"- {r['model']}: " + (f"`export-onnx --quantize int8` refuses it on this CPU: {r['verdict']}."
                                            if r["verdict"] else "int8 is worth it on this CPU (within the error "
                                                                 "bounds, at least as fast as fp32 at batch 64)."))
    lines += ["", f"Quantization: {payload['results'][0]['settings'] if payload['results'] else ''}. "
                  f"ONNX Runtime sessions with {payload['threads']} intra-op thread(s), all optimizations; "
                  f"fp32 and int8 timed in turns in one process, {payload['repeats']} windows of "
                  f"{payload['seconds']} s each; ratios are medians of the per-round ratios. The CPU-time ratio "
                  f"counts the calling thread's CPU seconds (steady on a shared machine). Machine: "
                  f"{info['cpu_count']} CPUs ({cpu['model'] if cpu else info['processor']}), "
                  f"OMP_NUM_THREADS={info['omp_num_threads']}."]
    return lines
