#!/usr/bin/env python
"""Inference speed: ONNX Runtime against MXNet (hybridized SymbolBlock), same model, same run.

Reports throughput (images/s) at several batch sizes and batch-1 latency
p50/p99, as a table and as JSON (:func:`stn_gluon.bench.inference_report`:
each backend in its own process, measured in turns, warm-up excluded,
medians of several windows).

    python scripts/bench_inference.py --model runs/demo --out runs/bench_inference
    python scripts/bench_inference.py            # a randomly initialised STNNet
"""
import argparse
import sys

from stn_gluon.bench import inference_report
from stn_gluon.train.reporting import run_script, write_report


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
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches {args.batches!r}: expected integers like 1,64,256")
    lines, payload = inference_report(args.model, args.onnx, batches, args.seconds, args.repeats, args.latency_count,
                                      args.threads, args.ort_mode,
                                      echo=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    write_report(args.out, lines, payload)
    return 0


if __name__ == "__main__":
    run_script(main)
