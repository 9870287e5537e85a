"""Speed benchmarks (``stn-gluon bench speed`` and ``stn-gluon bench time-to-accuracy``).

Everything is measured in one run on one machine, side by side: each
competitor in a worker process of its own, timed in turns with the others;
warm-up runs are excluded, each figure is the median of several timed
repetitions.
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
    """Median items/s of ``step()`` over ``repeats`` windows of about ``seconds`` each.

    A step that only queues work (MXNet's engine is asynchronous) carries a
    ``sync()`` attribute: it is called after the warm-up and at the end of
    each window, before the clock is read.
    """
    sync = getattr(step, "sync", lambda: None)
    for _ in range(warmup):
        step()
    sync()
    rates = []
    for _ in range(repeats):
        n, tic = 0, time.perf_counter()
        while True:
            step()
            n += 1
            if time.perf_counter() - tic >= seconds and n >= 2:
                sync()
                break
        rates.append(n * items / (time.perf_counter() - tic))
    return float(np.median(rates))


def _timed(step):
    """A timer ``(items, seconds, warmup) -> items/s`` of ``step()`` called in this process (one window)."""
    return lambda items, seconds, warmup: _median_rate(step, items, seconds, 1, warmup=warmup)


def _interleaved_rates(timers, items, seconds, repeats, warmup=3, rounds=None):
    """Median items/s of each competitor, measured in turns (A, B, C, A, B, C, ...).

    ``timers[name]`` is a timer ``(items, seconds, warmup) -> items/s``: an
    :class:`_Isolated` worker, or :func:`_timed` for a step called here.
    Each repetition times one window of every competitor in a row, so a
    machine whose speed drifts during the run (a shared VM) slows all of them
    alike and the ratios between them stay fair.
    """
    if warmup:
        for timer in timers.values():
            timer(items, 0.0, warmup)
    rates = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            rates[name].append(timer(items, seconds, 0))
    if rounds is not None:  # every round's rates, for ratios taken within a round
        rounds.update(rates)
    return {name: float(np.median(r)) for name, r in rates.items()}


def _ratio(rounds, name, peer):
    """Median over rounds of ``name``'s rate / ``peer``'s in the same round (``None`` without the peer)."""
    if peer not in rounds:
        return None
    return float(np.median(np.array(rounds[name]) / np.array(rounds[peer])))


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

    from .architecture import build_net, initialize_net
    from .recipes import TrainConfig

    net = build_net(TrainConfig(), (1, size, size), 10)
    initialize_net(net, [mx.cpu()])
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def gluon_train_step(batch, size=28, hybridize=True):
    """A training step of STNNet with ``gluon.Trainer`` (SGD, momentum), data from memory.

    As in :func:`stn_gluon.training.fit`: batches wrapped without a blocking
    copy, the loop a few steps ahead of the engine (``step.sync`` drains it).
    """
    import mxnet as mx
    from mxnet import autograd, gluon

    from .data import to_ndarray
    from .training import RunAhead, make_trainer

    net = _gluon_net(size, hybridize)
    trainer = make_trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    xs, ys = _data(batch, size)
    state = {"i": 0}
    run_ahead = RunAhead()

    def step():
        i = state["i"] = (state["i"] + 1) % len(xs)
        x, y = to_ndarray(xs[i]), to_ndarray(ys[i])
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)
        run_ahead.push(loss)
    step.sync = mx.nd.waitall
    return step


def module_train_step(batch, size=28):
    """A training step of the symbolic STN classifier with ``mx.mod.Module``."""
    import mxnet as mx

    from .data import BACKGROUND, to_ndarray
    from .symbol import get_symbol
    from .architecture import default_initializer

    mod = mx.mod.Module(get_symbol(target_shape=(size, size), lr_mult=0.1, dropout=0.3, fill=BACKGROUND))
    mod.bind(data_shapes=[("data", (batch, 1, size, size))], label_shapes=[("softmax_label", (batch,))])
    mod.init_params(default_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4})
    xs, ys = _data(batch, size)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % len(xs)
        mod.forward_backward(mx.io.DataBatch([to_ndarray(xs[i])], [to_ndarray(ys[i])]))
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

def _have_torch():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _torch_threads(torch):
    """PyTorch gets as many threads as MXNet's OpenMP pool (its own default may be fewer)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


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


def torch_train_step(batch, size=28):
    """A training step of the same network in PyTorch eager (SGD, momentum)."""
    import torch

    from .data import BACKGROUND

    _torch_threads(torch)
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


# ---------------------------------------------------------------- isolated competitors

def _infer_input(batch, size=28):
    """The fixed ``(batch, 1, size, size)`` float32 input every inference competitor runs on."""
    return np.random.RandomState(batch).normal(0, 1, (batch, 1, size, size)).astype(np.float32)


def gluon_infer_call(batch, size=28):
    """Inference with the hybridized STNNet on one fixed batch (input copy and output read included)."""
    import mxnet as mx

    net = _gluon_net(size, True)
    x = _infer_input(batch, size)
    return lambda: net(mx.nd.array(x)).asnumpy()


def symbolblock_infer_call(batch, prefix):
    """Inference with the exported model loaded back as a hybridized ``SymbolBlock``."""
    import mxnet as mx

    from .export import load_model

    net = load_model(prefix).net
    net.hybridize(static_alloc=True, static_shape=True)
    x = _infer_input(batch)
    return lambda: net(mx.nd.array(x)).asnumpy()


def onnx_infer_call(batch, path):
    """Inference with ONNX Runtime (:class:`stn_gluon.onnx.OnnxModel`, logits only)."""
    from .onnx import OnnxModel

    model = OnnxModel(path, outputs=["logits"])
    x = _infer_input(batch)
    return lambda: model.run(x)["logits"]


def torch_infer_call(batch, size=28):
    """Inference with the PyTorch peer in eval mode under ``no_grad``."""
    import torch

    from .data import BACKGROUND

    _torch_threads(torch)
    net = _torch_net(torch, size, BACKGROUND).eval()
    x = _infer_input(batch, size)

    def call():
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()
    return call


_FACTORIES = {"gluon_train": gluon_train_step, "module_train": module_train_step, "torch_train": torch_train_step,
              "gluon_infer": gluon_infer_call, "symbolblock_infer": symbolblock_infer_call,
              "onnx_infer": onnx_infer_call, "torch_infer": torch_infer_call}


_REPLY = "@@bench "  # marks the worker's replies among anything else printed on its stdout


def _serve_timings(kind, kwargs_json):
    """Worker process (``python -c``): build ``_FACTORIES[kind]``, then time it on request.

    Requests arrive as JSON lines on stdin, replies leave as marked JSON lines on stdout.
    """
    import json

    def reply(status, value):
        print(_REPLY + json.dumps([status, value]), flush=True)
    try:
        call = _FACTORIES[kind](**json.loads(kwargs_json))
        call()
    except Exception as err:  # reported to the parent, which raises it there
        reply("error", f"{kind}: {type(err).__name__}: {err}")
        return
    reply("ready", None)
    for line in sys.stdin:
        request = json.loads(line)
        if request[0] == "rate":
            _, items, seconds, warmup = request
            reply("ok", _median_rate(call, items, seconds, 1, warmup=warmup))
        elif request[0] == "latency":
            reply("ok", _latency(call))
        else:
            return


class _Isolated:
    """A competitor timed in a process of its own (``kind`` names its factory in ``_FACTORIES``).

    Callable as ``timer(items, seconds, warmup) -> items/s``, like the
    in-process timers of :func:`_timed`. A fresh interpreter
    (not ``multiprocessing``), so that the caller's script is not re-imported.
    """

    def __init__(self, kind, kwargs):
        import json

        code = f"from stn_gluon.bench import _serve_timings; _serve_timings({kind!r}, {json.dumps(kwargs)!r})"
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)

    def _ask(self, *request):
        import json

        from .errors import StnGluonError

        if request:
            self._proc.stdin.write(json.dumps(list(request)) + "\n")
            self._proc.stdin.flush()
        for line in self._proc.stdout:
            if line.startswith(_REPLY):
                status, value = json.loads(line[len(_REPLY):])
                if status == "error":
                    raise StnGluonError(f"benchmark worker failed: {value}")
                return value
        raise StnGluonError(f"a benchmark worker died (exit code {self._proc.wait()})")

    def ready(self):
        return self._ask()

    def __call__(self, items, seconds, warmup):
        return self._ask("rate", items, seconds, warmup)

    def latency(self):
        return self._ask("latency")

    def close(self):
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()


def _isolated_rates(specs, items, seconds, repeats, warmup=3, latency=None, rounds=None):
    """:func:`_interleaved_rates` over competitors ``{name: (kind, kwargs)}``, each in its own process.

    With a ``latency`` dict, each competitor's batch-1 latency percentiles are
    stored in it too (measured one competitor at a time).
    """
    workers = {name: _Isolated(kind, kwargs) for name, (kind, kwargs) in specs.items()}
    try:
        for worker in workers.values():
            worker.ready()
        rates = _interleaved_rates(workers, items, seconds, repeats, warmup, rounds)
        if latency is not None:
            latency.update({name: worker.latency() for name, worker in workers.items()})
        return rates
    finally:
        for worker in workers.values():
            worker.close()


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
    """Run every speed measurement; returns ``(markdown lines, JSON-able results)``.

    Every competitor runs in a process of its own (:class:`_Isolated`): two
    frameworks in one process share the cores with each other's idle
    OpenMP pools, which slowed both by up to half here.
    """
    have_torch = _have_torch()
    res = {"train": {}, "infer": {}, "latency_ms": {}, "scaling_batch": {}, "scaling_size": {}, "ratios": {},
           "threads": os.environ.get("OMP_NUM_THREADS")}

    for b in batches:
        echo(f"training throughput, batch {b}")
        specs = {"gluon imperative": ("gluon_train", dict(batch=b, hybridize=False)),
                 "gluon hybridized": ("gluon_train", dict(batch=b, hybridize=True)),
                 "module": ("module_train", dict(batch=b))}
        if have_torch:
            specs["pytorch eager"] = ("torch_train", dict(batch=b))
        rounds = {}
        res["train"][b] = _isolated_rates(specs, b, seconds, repeats, rounds=rounds)
        res["ratios"][f"train {b}: gluon hybridized / pytorch eager"] = _ratio(rounds, "gluon hybridized", "pytorch eager")

    with tempfile.TemporaryDirectory() as tmp:
        echo("inference throughput")
        _, prefix, onnx_path = _exported(tmp)
        for b in (1, 64, 256):
            specs = {"gluon hybridized": ("gluon_infer", dict(batch=b)),
                     "exported SymbolBlock": ("symbolblock_infer", dict(batch=b, prefix=prefix)),
                     "onnxruntime": ("onnx_infer", dict(batch=b, path=onnx_path))}
            if have_torch:
                specs["pytorch eager"] = ("torch_infer", dict(batch=b))
            latency, rounds = {} if b == 1 else None, {}
            res["infer"][b] = _isolated_rates(specs, b, seconds, repeats, latency=latency, rounds=rounds)
            res["ratios"][f"infer {b}: onnxruntime / pytorch eager"] = _ratio(rounds, "onnxruntime", "pytorch eager")
            if latency is not None:
                res["latency_ms"] = latency

    echo("scaling")
    for b in (16, 32, 64, 128, 256, 512, 1024):
        res["scaling_batch"][b] = _isolated_rates({"x": ("gluon_train", dict(batch=b))}, b, seconds, repeats)["x"]
    for size in (28, 42, 60, 128):
        res["scaling_size"][size] = _isolated_rates(
            {"x": ("gluon_train", dict(batch=64, size=size))}, 64, seconds, repeats)["x"]

    echo("peak memory of a training run")
    res["peak_train_rss_mib"] = _peak_training_rss(data_dir)
    return _speed_lines(res, have_torch), res


def _speed_lines(res, have_torch):
    lines = [f"Each competitor in its own process, {res.get('threads') or 'default'} OpenMP threads (PyTorch: as many); "
             "ratios are medians of the ratios within each round.", "",
             "### Training throughput (images/s, STNNet, SGD with momentum)", "",
             "| batch | Gluon imperative | Gluon hybridized | Module | PyTorch eager | hybridized / PyTorch |",
             "|---|---|---|---|---|---|"]
    for b, row in res["train"].items():
        torch_rate = row.get("pytorch eager")
        ratio = res["ratios"].get(f"train {b}: gluon hybridized / pytorch eager")
        ratio = f"{ratio:.2f}x" if ratio else "n/a"
        lines.append(f"| {b} | {row['gluon imperative']:,.0f} | {row['gluon hybridized']:,.0f} | {row['module']:,.0f} | "
                     f"{f'{torch_rate:,.0f}' if torch_rate else 'n/a'} | {ratio} |")
    lines += ["", "### Inference throughput (images/s) and batch-1 latency", "",
              "| | Gluon hybridized | exported SymbolBlock | ONNX Runtime | PyTorch eager | ONNX Runtime / PyTorch |",
              "|---|---|---|---|---|---|"]
    names = ["gluon hybridized", "exported SymbolBlock", "onnxruntime", "pytorch eager"]
    for b, row in res["infer"].items():
        cells = [f"{row[n]:,.0f}" if n in row else "n/a" for n in names]
        ratio = res["ratios"].get(f"infer {b}: onnxruntime / pytorch eager")
        ratio = f"{ratio:.2f}x" if ratio else "n/a"
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
                recipe=cfg.recipe_fields())
