"""``stn-gluon bench loader``: training speed from a folder of PNGs against the same images in memory.

A folder of ``images`` colour PNGs (``size`` x ``size``, ``classes`` class folders; solid class colours with
noise) is written to a temporary folder and read as ``stn-gluon train --dataset folder:`` reads it: the first
read decodes every image (timed: the decode rate) into the cache, the second reads the cache (timed). Then the
same training step (``model``, batch ``batch_size``, hybridized, SGD) is timed on three sources, in turns
(``rounds`` rounds of ``steps`` steps each, the median kept): the arrays read back from the cache (what a
folder dataset trains from), the same arrays handed over in memory (an :class:`ImageDataset` built here), and
the folder streamed from disk through Gluon's ``DataLoader`` (``workers`` processes; what a set larger than
``--memory-limit-mb`` trains from). The report gives images/s and each source's ratio to in memory; the
target for the cached folder is at least 0.9x.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterator, List, Tuple

import mxnet as mx
import numpy as np

from .._runtime.flags import option, validate_fields
from ..data.dataset import ImageDataset
from ..data.sources import LoadOptions, load_images
from ..nn.architecture import initialize_net
from ..train.gluon import RunAhead, make_trainer, train_step
from ..train.recipes import TrainConfig, build_net
from ..train.reporting import write_report
from ..train.steps import PreparedData

__all__ = ["LoaderBenchConfig", "run_loader_bench", "write_png_folder", "TARGET_RATIO"]

#: The cached folder must train at least this fast, relative to the same arrays in memory.
TARGET_RATIO = 0.9


@dataclass
class LoaderBenchConfig:
    """The ``bench loader`` flags."""
    images: int = option(2000, "PNG files written (split evenly over the classes)", minimum=64)
    classes: int = option(10, "class folders", minimum=2)
    size: int = option(32, "side of each image in pixels", minimum=8)
    model: str = option("stn_lenet", "the network trained (any --model of train)")
    batch_size: int = option(64, "images per training step", minimum=1)
    steps: int = option(40, "timed training steps per source and round", minimum=1)
    rounds: int = option(3, "rounds of the three sources in turns (median)", minimum=1)
    workers: int = option(2, "DataLoader worker processes of the streamed source (and the decoding pool)",
                          minimum=0)
    out: str = option("runs/bench_loader", "where results.md and results.json go")


def write_png_folder(root: str, images: int, classes: int, size: int, seed: int = 0) -> str:
    """``images`` colour PNGs of ``size`` x ``size`` in ``classes`` class folders under ``root``; returns root."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    colours = rng.randint(0, 256, (classes, 3))
    for i in range(images):
        k = i % classes
        folder = os.path.join(root, f"class{k:02d}")
        os.makedirs(folder, exist_ok=True)
        noise = rng.normal(0, 40, (size, size, 3))
        pixels = np.clip(colours[k] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:06d}.png"), compress_level=1)
    return root


def _steps(data: PreparedData, count: int) -> Iterator[Tuple[Any, Any]]:
    """``count`` training batches of ``data``, epoch after epoch."""
    epoch = 0
    while True:
        data.train.set_epoch(epoch)
        for batch in data.train:
            yield batch
            count -= 1
            if count == 0:
                return
        epoch += 1


class _Trainer:
    """One network, trainer and data source: :meth:`timed` runs ``steps`` training steps -> images/s."""

    def __init__(self, cfg: TrainConfig, dataset: ImageDataset) -> None:
        self.data = PreparedData(cfg, dataset)
        self.net = build_net(cfg, self.data.input_shape, self.data.num_classes, digits=False)
        initialize_net(self.net, [mx.cpu()])
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.net(mx.nd.zeros((2,) + tuple(self.data.input_shape)))
        self.trainer = make_trainer(self.net.collect_params(), "sgd", dict(learning_rate=0.01, momentum=0.9))
        self.loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()

    def timed(self, steps: int) -> float:
        ahead = RunAhead()
        batches = _steps(self.data, steps + 2)
        for data, label in (next(batches), next(batches)):  # warm: the first batches of the DataLoader's pool
            ahead.push(train_step(self.net, self.trainer, self.loss, data, label, [mx.cpu()])[2][0])
        mx.nd.waitall()
        tic, seen = time.perf_counter(), 0
        for data, label in batches:
            ahead.push(train_step(self.net, self.trainer, self.loss, data, label, [mx.cpu()])[2][0])
            seen += data.shape[0]
        mx.nd.waitall()
        return seen / (time.perf_counter() - tic)


def _load(cfg: LoaderBenchConfig, folder: str, cache: str, echo: Callable[[str], Any]) -> Dict[str, Any]:
    """The folder read twice (decoded into the cache, then from it) and streamed; the times and datasets."""
    options = LoadOptions(val_split=0.05, cache_dir=cache, workers=cfg.workers)
    tic = time.perf_counter()
    load_images(f"folder:{folder}", options)
    decode = time.perf_counter() - tic
    tic = time.perf_counter()
    cached = load_images(f"folder:{folder}", options)
    read = time.perf_counter() - tic
    echo(f"decoded {cfg.images} PNGs in {decode:.2f} s into the cache; read back from it in {read:.3f} s")
    streamed = load_images(f"folder:{folder}", replace(options, memory_limit_mb=1e-6))
    memory = ImageDataset(np.array(cached.train_images), cached.train_labels.copy(), np.array(cached.test_images),
                          cached.test_labels.copy(), "in memory", classes=cached.classes, mean=cached.mean,
                          std=cached.std, digits=False, val_images=np.array(cached.val_images),
                          val_labels=np.array(cached.val_labels))
    return dict(decode_seconds=decode, cache_read_seconds=read,
                sources={"folder (cached)": cached, "in memory": memory, "folder (streamed)": streamed})


def run_loader_bench(cfg: LoaderBenchConfig, echo: Callable[[str], Any] = print) -> Dict[str, Any]:
    """Run the benchmark (module docs); writes ``results.md`` and ``results.json`` to ``cfg.out``."""
    validate_fields(cfg)
    with tempfile.TemporaryDirectory(prefix="stn_gluon_bench_loader_") as tmp:
        folder = write_png_folder(os.path.join(tmp, "images"), cfg.images, cfg.classes, cfg.size)
        loaded = _load(cfg, folder, os.path.join(tmp, "cache"), echo)
        train_cfg = TrainConfig(model=cfg.model, batch_size=cfg.batch_size, dataset=f"folder:{folder}",
                                loader_workers=cfg.workers, augment=False)
        trainers = {name: _Trainer(train_cfg, d) for name, d in loaded.pop("sources").items()}
        rates: Dict[str, List[float]] = {name: [] for name in trainers}
        for r in range(cfg.rounds):
            for name, trainer in trainers.items():
                rates[name].append(trainer.timed(cfg.steps))
            echo(f"round {r + 1}/{cfg.rounds}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in rates.items())
                 + " images/s")
        trainers.clear()
    result = dict(loaded, config=vars(cfg), images_per_sec={n: statistics.median(v) for n, v in rates.items()},
                  rounds=rates)
    # each round's ratio to in memory (timed beside it), the median of those: steadier on a busy machine
    result["ratio"] = {n: statistics.median(a / b for a, b in zip(v, rates["in memory"])) for n, v in rates.items()}
    result["target_met"] = result["ratio"]["folder (cached)"] >= TARGET_RATIO
    write_report(cfg.out, loader_lines(result), dict(result=result))
    return result


def loader_lines(result: Dict[str, Any]) -> List[str]:
    """``results.md`` of :func:`run_loader_bench`."""
    cfg = result["config"]
    lines = [f"Training images/s of {cfg['model']} (batch {cfg['batch_size']}) at {cfg['size']}x{cfg['size']}x3, "
             f"{cfg['images']} PNGs in {cfg['classes']} class folders; median of {cfg['rounds']} rounds of "
             f"{cfg['steps']} steps, the sources in turns.", "",
             "| source | images/s | ratio to in memory (median of the rounds' ratios) |", "|---|---:|---:|"]
    for name, rate in result["images_per_sec"].items():
        lines.append(f"| {name} | {rate:,.0f} | {result['ratio'][name]:.2f}x |")
    verdict = "met" if result["target_met"] else "NOT met"
    lines += ["", f"Decoding the PNGs into the cache: {result['decode_seconds']:.2f} s "
                  f"({cfg['images'] / max(result['decode_seconds'], 1e-9):,.0f} images/s, {cfg['workers']} "
                  f"process(es)); reading the cache: {result['cache_read_seconds']:.3f} s.",
              f"Target: the cached folder at >= {TARGET_RATIO:.1f}x in memory: {verdict}."]
    return lines
