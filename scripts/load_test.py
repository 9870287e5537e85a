#!/usr/bin/env python
"""Load test of ``stn-gluon serve`` on loopback: micro-batching against batch-size-1 serving.

Starts the server twice on free 127.0.0.1 ports (``--max-batch 32`` and
``--max-batch 1``), sends each ``--requests`` PNG digits (real MNIST test
digits) from ``--clients`` concurrent keep-alive connections, and reports
throughput, latency p50/p99 and errors. Bounded: it stops at ``--requests``
or ``--max-seconds``, whichever comes first.

    python scripts/load_test.py --model runs/demo/model.onnx --out runs/load

``--baseline DIR`` compares instead this checkout's server with an older one
(``DIR`` holds its ``stn_gluon`` package, e.g. ``git archive v0.1.0 stn_gluon |
tar -x -C DIR``), both micro-batching, in ``--rounds`` alternating rounds on the
same model, payloads and client: the cost of a change, side by side.

    python scripts/load_test.py --baseline /tmp/stn-base --rounds 3 --out runs/load_vs_base
"""
import argparse
import os
import tempfile

from stn_gluon.bench.processes import Children, load, png_payloads, run_async, start_server
from stn_gluon.train.reporting import machine_info, run_script, write_report


def _default_model(folder):
    import mxnet as mx

    import stn_gluon as sg
    from stn_gluon.export.onnx import export_onnx

    net = sg.STNNet()
    net.initialize(mx.init.Xavier())
    return export_onnx(net, os.path.join(folder, "model.onnx"))


def _serve_and_load(model, args, batch, payloads, env=None, cwd=None):
    with Children() as children:
        _, port = start_server(children, model, args.backend, batch, args.max_wait_ms if batch > 1 else 0, env=env,
                               cwd=cwd)
        run_async(load(port, payloads, min(500, args.requests), args.clients, 30))  # warm-up
        return run_async(load(port, payloads, args.requests, args.clients, args.max_seconds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help=".onnx file or MXNet export (default: a random STNNet)")
    parser.add_argument("--backend", default=None, choices=["onnxruntime", "mxnet"])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop each run after this long")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--out", default="runs/load")
    parser.add_argument("--baseline", default=None, help="a folder holding an older stn_gluon package: compare "
                                                          "this checkout's server with it")
    parser.add_argument("--rounds", type=int, default=3, help="--baseline: alternating rounds")
    args = parser.parse_args(argv)
    payloads = png_payloads(1000)
    if args.baseline:
        return _against_baseline(args, payloads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _default_model(tmp)
        for label, batch in (("micro-batching", args.max_batch), ("batch size 1", 1)):
            results[label] = _serve_and_load(model, args, batch, payloads)
            results[label]["max_batch"] = batch
    a, b = results["micro-batching"], results["batch size 1"]
    lines = ["| serving | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) |", "|---|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} (--max-batch {r['max_batch']}) | {r['requests']} | {r['errors']} | "
                     f"{r['throughput']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    info = machine_info()
    lines += ["", f"Micro-batching / batch size 1: {a['throughput'] / b['throughput']:.2f}x throughput at "
                  f"{args.clients} clients. Model: {args.model or 'random STNNet (ONNX)'}; "
                  f"backend {args.backend or 'by file type'}; {info['cpu_count']} CPUs shared by server and clients."]
    write_report(args.out, lines, dict(results=results, clients=args.clients))
    return 0 if a["errors"] == 0 and b["errors"] == 0 else 1


def _against_baseline(args, payloads):
    """This checkout's server against ``--baseline``'s, alternately, ``--rounds`` times; the medians' ratio."""
    import statistics

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {"baseline": [], "this checkout": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.abspath(args.model) if args.model else _default_model(tmp)
        for _ in range(args.rounds):
            for label, path in (("baseline", os.path.abspath(args.baseline)), ("this checkout", here)):
                # each server starts in its own package's folder: `python -m` would import the working folder's first
                env = dict(os.environ, PYTHONPATH=path)
                runs[label].append(_serve_and_load(model, args, args.max_batch, payloads, env, cwd=path))
    lines = ["| server | throughput per round (req/s) | median | errors |", "|---|---|---|---|"]
    medians = {}
    for label, results in runs.items():
        medians[label] = statistics.median(r["throughput"] for r in results)
        rounds = ", ".join(f"{r['throughput']:,.0f}" for r in results)
        lines.append(f"| {label} | {rounds} | "
                     f"{medians[label]:,.0f} | {sum(r['errors'] for r in results)} |")
    lines += ["", f"This checkout / baseline: {medians['this checkout'] / medians['baseline']:.3f} "
                  f"(medians of {args.rounds} alternating rounds, {args.clients} clients, --max-batch {args.max_batch})."]
    write_report(args.out, lines, dict(runs=runs, clients=args.clients))
    return 0 if all(r["errors"] == 0 for results in runs.values() for r in results) else 1


if __name__ == "__main__":
    run_script(main)
