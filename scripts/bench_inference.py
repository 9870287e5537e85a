#!/usr/bin/env python
"""Inference speed: ONNX Runtime against MXNet (hybridized SymbolBlock), same model, same run.

Reports throughput (images/s) at several batch sizes and batch-1 latency
p50/p99, as a table and as JSON. Warm-up runs are excluded; each number is the
median of several repetitions; the two backends are measured alternately.

    python scripts/bench_inference.py --model runs/demo --out runs/bench_inference
    python scripts/bench_inference.py            # a randomly initialised STNNet
"""
import argparse
import os
import tempfile
import time

import numpy as np

from stn_gluon.reporting import machine_info, run_script, write_report


def _random_model(folder):
    import mxnet as mx

    import stn_gluon as sg
    from stn_gluon.export import export_block

    net = sg.STNNet(prefix="stn_lenet_")
    net.initialize(mx.init.Xavier())
    export_block(net, os.path.join(folder, "model"), mx.nd.zeros((1, 1, 28, 28)),
                 meta=dict(input_shape=[1, 28, 28], input_name="data", mean=0.1307, std=0.3081))
    return folder


class MXNetRunner:
    def __init__(self, path):
        import mxnet as mx

        from stn_gluon.export import load_model

        self.mx = mx
        self.net = load_model(path).net
        self.net.hybridize(static_alloc=True, static_shape=True)

    def __call__(self, x):
        return self.net(self.mx.nd.array(x)).asnumpy()


class OrtRunner:
    def __init__(self, path, threads, mode):
        from stn_gluon.onnx import OnnxModel

        self.model = OnnxModel(path, threads=threads, mode=mode, outputs=["logits"])

    def __call__(self, x):
        return self.model.run(x)["logits"]


def _throughput(run, x, seconds):
    run(x)
    n, tic = 0, time.perf_counter()
    while True:
        run(x)
        n += 1
        elapsed = time.perf_counter() - tic
        if elapsed >= seconds and n >= 3:
            return n * len(x) / elapsed


def _latencies(run, x, count):
    out = []
    for _ in range(count):
        tic = time.perf_counter()
        run(x)
        out.append(time.perf_counter() - tic)
    return np.array(out) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="save dir / export prefix (default: a random STNNet)")
    parser.add_argument("--onnx", default=None, help="its .onnx file (default: exported to a temp dir)")
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per throughput measurement")
    parser.add_argument("--latency-count", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all)")
    parser.add_argument("--ort-mode", default="split", choices=["split", "intra"],
                        help="split: chunks of a batch on single-threaded runs in parallel; intra: ORT's thread pool")
    parser.add_argument("--out", default="runs/bench_inference")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _random_model(tmp)
        onnx_path = args.onnx
        if onnx_path is None:
            from stn_gluon.onnx import export_onnx
            onnx_path = export_onnx(model, os.path.join(tmp, "model.onnx"))
        runners = {"mxnet": MXNetRunner(model), "onnxruntime": OrtRunner(onnx_path, args.threads, args.ort_mode)}
        rng = np.random.RandomState(0)
        results = {name: {"throughput": {}, "latency_ms": {}} for name in runners}
        for batch in batches:
            x = rng.normal(0, 1, (batch, 1, 28, 28)).astype(np.float32)
            samples = {name: [] for name in runners}
            for _ in range(args.repeats):
                for name, run in runners.items():  # alternate: drift hits both alike
                    samples[name].append(_throughput(run, x, args.seconds))
            for name in runners:
                results[name]["throughput"][batch] = float(np.median(samples[name]))
        x1 = rng.normal(0, 1, (1, 1, 28, 28)).astype(np.float32)
        for name, run in runners.items():
            for _ in range(20):
                run(x1)
            lat = _latencies(run, x1, args.latency_count)
            results[name]["latency_ms"] = dict(p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)))

    mx_r, ort_r = results["mxnet"], results["onnxruntime"]
    lines = ["| measure | MXNet (hybridized) | ONNX Runtime | ONNX Runtime / MXNet |", "|---|---|---|---|"]
    for batch in batches:
        a, b = mx_r["throughput"][batch], ort_r["throughput"][batch]
        lines.append(f"| throughput, batch {batch} (images/s) | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")
    for q in ("p50", "p99"):
        a, b = mx_r["latency_ms"][q], ort_r["latency_ms"][q]
        lines.append(f"| latency batch 1, {q} (ms) | {a:.3f} | {b:.3f} | {a / b:.2f}x faster |")
    info = machine_info()
    lines += ["", f"Model: {args.model or 'random STNNet'}. Machine: {info['cpu_count']} CPUs ({info['processor']}), "
                  f"MXNet {info['mxnet']}, OMP_NUM_THREADS={info['omp_num_threads']}, "
                  f"ONNX Runtime threads={args.threads or os.cpu_count()} ({args.ort_mode})."]
    write_report(args.out, lines, dict(results=results, batches=batches, ort_mode=args.ort_mode))
    return 0


if __name__ == "__main__":
    run_script(main)
