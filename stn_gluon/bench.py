"""Speed benchmarks (``stn-gluon bench speed`` and ``stn-gluon bench time-to-accuracy``).

Everything is measured in one process on one machine, side by side: warm-up
runs are excluded, each figure is the median of several timed repetitions.
Training steps read their batches from in-memory arrays (no augmentation) so
that the frameworks do the same work; PyTorch (eager, ``F.affine_grid`` +
``F.grid_sample``, same layers, same initial scale) is the peer when it is
importable.
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

__all__ = ["speed_report", "time_to_accuracy"]


def _median_rate(step, items, seconds, repeats, warmup=3):
    """Median items/s of ``step()`` over ``repeats`` windows of about ``seconds`` each."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        n, tic = 0, time.perf_counter()
        while True:
            step()
            n += 1
            elapsed = time.perf_counter() - tic
            if elapsed >= seconds and n >= 2:
                break
        rates.append(n * items / elapsed)
    return float(np.median(rates))


def _interleaved_rates(steps, items, seconds, repeats, warmup=3):
    """Median items/s of each ``steps[name]()``, measured in turns (A, B, C, A, B, C, ...).

    Each repetition times one window of every step in a row, so a machine
    whose speed drifts during the run (a shared VM) slows all of them alike
    and the ratios between them stay fair.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    rates = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(_median_rate(step, items, seconds, 1, warmup=0))
    return {name: float(np.median(r)) for name, r in rates.items()}


def _latency(call, count=200, warmup=20):
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        tic = time.perf_counter()
        call()
        samples.append(time.perf_counter() - tic)
    ms = np.array(samples) * 1000
    return dict(p50=float(np.percentile(ms, 50)), p99=float(np.percentile(ms, 99)))


def _data(batch, size, count=8, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.normal(0, 1, (count, batch, 1, size, size)).astype(np.float32)
    y = rng.randint(0, 10, (count, batch)).astype(np.float32)
    return x, y


# ---------------------------------------------------------------- MXNet

def _gluon_net(size, hybridize):
    """STNNet built and initialised as ``stn-gluon train`` builds it, for ``size`` x ``size`` input."""
    import mxnet as mx

    from .training import TrainConfig, _build_net, _initialize

    net = _build_net(TrainConfig(), (1, size, size), 10)
    _initialize(net, [mx.cpu()])
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def gluon_train_step(batch, size=28, hybridize=True):
    """A training step of STNNet with ``gluon.Trainer`` (SGD, momentum), data from memory."""
    import mxnet as mx
    from mxnet import autograd, gluon

    net = _gluon_net(size, hybridize)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4},
                            kvstore=None)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    xs, ys = _data(batch, size)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % len(xs)
        x, y = mx.nd.array(xs[i]), mx.nd.array(ys[i])
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)
        loss.wait_to_read()
    return step


def module_train_step(batch, size=28):
    """A training step of the symbolic STN classifier with ``mx.mod.Module``."""
    import mxnet as mx

    from .data import BACKGROUND
    from .symbol import get_symbol
    from .training import default_initializer

    mod = mx.mod.Module(get_symbol(target_shape=(size, size), lr_mult=0.1, dropout=0.3, fill=BACKGROUND))
    mod.bind(data_shapes=[("data", (batch, 1, size, size))], label_shapes=[("softmax_label", (batch,))])
    mod.init_params(default_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4})
    xs, ys = _data(batch, size)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % len(xs)
        mod.forward_backward(mx.io.DataBatch([mx.nd.array(xs[i])], [mx.nd.array(ys[i])]))
        mod.update()
        mod.get_outputs()[0].wait_to_read()
    return step


def _exported(folder):
    """A trained-shape STNNet exported as MXNet files and ONNX, in ``folder``."""
    import mxnet as mx

    from .export import export_block
    from .onnx import export_onnx

    net = _gluon_net(28, True)
    prefix = os.path.join(folder, "model")
    export_block(net, prefix, mx.nd.zeros((1, 1, 28, 28)),
                 meta=dict(input_shape=[1, 28, 28], input_name="data", mean=0.1307, std=0.3081))
    export_onnx(folder, os.path.join(folder, "model.onnx"))
    return net, prefix, os.path.join(folder, "model.onnx")


# ---------------------------------------------------------------- PyTorch peer

def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_net(torch, size, fill):
    nn, F = torch.nn, torch.nn.functional

    class TorchSTNNet(nn.Module):
        """The same network as STNNet, in PyTorch (the reference tutorial's layers)."""

        def __init__(self):
            super().__init__()
            self.loc = nn.Sequential(nn.Conv2d(1, 8, 7), nn.MaxPool2d(2, 2), nn.ReLU(True),
                                     nn.Conv2d(8, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU(True), nn.Flatten())
            loc_out = self.loc(torch.zeros(1, 1, size, size)).shape[1]
            self.fc_loc = nn.Sequential(nn.Linear(loc_out, 32), nn.ReLU(True), nn.Linear(32, 6))
            self.fc_loc[2].weight.data.zero_()
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
            self.conv1, self.conv2 = nn.Conv2d(1, 10, 5), nn.Conv2d(10, 20, 5)
            self.drop2d, self.drop = nn.Dropout2d(0.3), nn.Dropout(0.3)
            body_out = self._features(torch.zeros(1, 1, size, size)).shape[1]
            self.fc1, self.fc2 = nn.Linear(body_out, 50), nn.Linear(50, 10)

        def _features(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.drop2d(self.conv2(x)), 2))
            return x.flatten(1)

        def forward(self, x):
            theta = self.fc_loc(self.loc(x)).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.size()), align_corners=True)
            x = F.grid_sample(x - fill, grid, align_corners=True, padding_mode="zeros") + fill
            return self.fc2(self.drop(F.relu(self.fc1(self._features(x)))))

    return TorchSTNNet()


def torch_train_step(torch, batch, size=28):
    from .data import BACKGROUND

    net = _torch_net(torch, size, BACKGROUND)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    xs, ys = _data(batch, size)
    xs, ys = torch.from_numpy(xs), torch.from_numpy(ys).long()
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % len(xs)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xs[i]), ys[i])
        loss.backward()
        opt.step()
    return step


# ---------------------------------------------------------------- reports

_PEAK_PROBE = """
import atexit, resource, sys
def report():
    try:
        peak_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    except (OSError, IndexError, ValueError):  # no /proc: ru_maxrss (may include the parent's fork)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"PEAK_KIB {peak_kib}", file=sys.stderr)
atexit.register(report)
from stn_gluon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _peak_training_rss(data_dir=None):
    """Peak resident memory (MiB) of ``stn-gluon train --epochs 1`` in a fresh process.

    Read as the child's own high-water mark (``VmHWM``, reset at exec); the
    parent's ``RUSAGE_CHILDREN`` would count this large benchmark process that
    the child was forked from.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", _PEAK_PROBE, "train", "--epochs", "1", "--save-dir", tmp, "--no-progress"]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    peaks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB ")]
    if proc.returncode != 0 or not peaks:
        from .errors import StnGluonError
        raise StnGluonError(f"training run for the memory measurement failed: {proc.stderr.strip()[-200:]}")
    return int(peaks[-1]) / 1024.0


def speed_report(seconds=1.0, repeats=5, data_dir=None, batches=(64, 256), echo=print):
    """Run every speed measurement; returns ``(markdown lines, JSON-able results)``."""
    import mxnet as mx

    from .onnx import OnnxModel

    torch = _torch()
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    res = {"train": {}, "infer": {}, "latency_ms": {}, "scaling_batch": {}, "scaling_size": {}}

    def rate(step, items):
        return _median_rate(step, items, seconds, repeats)

    for b in batches:
        echo(f"training throughput, batch {b}")
        steps = {"gluon imperative": gluon_train_step(b, hybridize=False),
                 "gluon hybridized": gluon_train_step(b, hybridize=True),
                 "module": module_train_step(b)}
        if torch is not None:
            steps["pytorch eager"] = torch_train_step(torch, b)
        res["train"][b] = _interleaved_rates(steps, b, seconds, repeats)

    with tempfile.TemporaryDirectory() as tmp:
        echo("inference throughput")
        net, prefix, onnx_path = _exported(tmp)
        from .export import load_model
        sym_net = load_model(prefix).net
        sym_net.hybridize(static_alloc=True, static_shape=True)
        ort = OnnxModel(onnx_path, outputs=["logits"])
        tnet = None
        if torch is not None:
            from .data import BACKGROUND
            tnet = _torch_net(torch, 28, BACKGROUND).eval()
        for b in (1, 64, 256):
            x = np.random.RandomState(b).normal(0, 1, (b, 1, 28, 28)).astype(np.float32)
            calls = {"gluon hybridized": lambda x=x: net(mx.nd.array(x)).asnumpy(),
                     "exported SymbolBlock": lambda x=x: sym_net(mx.nd.array(x)).asnumpy(),
                     "onnxruntime": lambda x=x: ort.run(x)["logits"]}
            if tnet is not None:
                def torch_call(x=x):
                    with torch.no_grad():
                        return tnet(torch.from_numpy(x)).numpy()
                calls["pytorch eager"] = torch_call
            res["infer"][b] = _interleaved_rates(calls, b, seconds, repeats)
            if b == 1:
                res["latency_ms"] = {name: _latency(call) for name, call in calls.items()}

    echo("scaling")
    for b in (16, 32, 64, 128, 256, 512, 1024):
        res["scaling_batch"][b] = rate(gluon_train_step(b), b)
    for size in (28, 42, 60, 128):
        res["scaling_size"][size] = rate(gluon_train_step(64, size=size), 64)

    echo("peak memory of a training run")
    res["peak_train_rss_mib"] = _peak_training_rss(data_dir)
    return _speed_lines(res, torch is not None), res


def _speed_lines(res, have_torch):
    lines = ["### Training throughput (images/s, STNNet, SGD with momentum)", "",
             "| batch | Gluon imperative | Gluon hybridized | Module | PyTorch eager | hybridized / PyTorch |",
             "|---|---|---|---|---|---|"]
    for b, row in res["train"].items():
        torch_rate = row.get("pytorch eager")
        ratio = f"{row['gluon hybridized'] / torch_rate:.2f}x" if torch_rate else "n/a"
        lines.append(f"| {b} | {row['gluon imperative']:,.0f} | {row['gluon hybridized']:,.0f} | {row['module']:,.0f} | "
                     f"{f'{torch_rate:,.0f}' if torch_rate else 'n/a'} | {ratio} |")
    lines += ["", "### Inference throughput (images/s) and batch-1 latency", "",
              "| | Gluon hybridized | exported SymbolBlock | ONNX Runtime | PyTorch eager | ONNX Runtime / PyTorch |",
              "|---|---|---|---|---|---|"]
    names = ["gluon hybridized", "exported SymbolBlock", "onnxruntime", "pytorch eager"]
    for b, row in res["infer"].items():
        cells = [f"{row[n]:,.0f}" if n in row else "n/a" for n in names]
        ratio = f"{row['onnxruntime'] / row['pytorch eager']:.2f}x" if "pytorch eager" in row else "n/a"
        lines.append(f"| batch {b} | " + " | ".join(cells) + f" | {ratio} |")
    for q in ("p50", "p99"):
        cells = [f"{res['latency_ms'][n][q]:.3f} ms" if n in res["latency_ms"] else "n/a" for n in names]
        lines.append(f"| latency {q}, batch 1 | " + " | ".join(cells) + " | |")
    lines += ["", "### How training cost grows (Gluon hybridized, images/s)", "",
              "| batch | " + " | ".join(str(b) for b in res["scaling_batch"]) + " |",
              "|---|" + "---|" * len(res["scaling_batch"]),
              "| images/s | " + " | ".join(f"{v:,.0f}" for v in res["scaling_batch"].values()) + " |", "",
              "| input size (target size the same), batch 64 | " + " | ".join(f"{s} px" for s in res["scaling_size"]) + " |",
              "|---|" + "---|" * len(res["scaling_size"]),
              "| images/s | " + " | ".join(f"{v:,.0f}" for v in res["scaling_size"].values()) + " |", "",
              f"Peak resident memory of `stn-gluon train --epochs 1`: {res['peak_train_rss_mib']:.0f} MiB."]
    if not have_torch:
        lines.append("PyTorch is not installed here: no peer figures.")
    return lines


def time_to_accuracy(target=0.99, data_dir=None, echo=print, **overrides):
    """Wall seconds from the start of a default training run (data on disk) to test accuracy >= ``target``.

    Returns a dict with the time, the epoch, and the per-epoch history up to it
    (``None`` time if the run ended without reaching it).
    """
    from .data import load_mnist
    from .training import TrainConfig, fit

    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        dataset = load_mnist(data_dir)
        reached = {}

        def on_epoch(record):
            if record["test_acc"] >= target and not reached:
                reached.update(seconds=time.perf_counter() - tic, epoch=record["epoch"], test_acc=record["test_acc"])
                return True
            return False

        cfg = TrainConfig(save_dir=tmp, progress=False, data_dir=data_dir, **overrides)
        metrics = fit(cfg, dataset=dataset, echo=echo, on_epoch=on_epoch)
    return dict(target=target, seconds=reached.get("seconds"), epoch=reached.get("epoch"),
                test_acc=reached.get("test_acc"), data_source=dataset.source, epochs_run=metrics["epochs"],
                recipe=cfg.recipe())
