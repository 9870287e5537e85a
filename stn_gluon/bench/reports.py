"""Markdown tables of the speed benchmarks (the JSON is the results dict itself)."""
from typing import Optional

from ..train.reporting import machine_info

__all__ = ["speed_lines", "inference_lines"]


def _rate(value: Optional[float]) -> str:
    return f"{value:,.0f}" if value else "n/a"


def _times(value: Optional[float]) -> str:
    return f"{value:.2f}x" if value else "n/a"


def _threads(value: Optional[int]) -> str:
    return f"{value} OpenMP threads" if value else "OpenMP threads unknown"


def speed_lines(res: dict, have_torch: bool) -> list:
    """The Markdown report of :func:`stn_gluon.bench.speed_report`'s results."""
    lines = [f"Each competitor in its own process, {res.get('threads') or 'default'} OpenMP threads (PyTorch: as many); "
             "ratios are medians of the ratios within each round.", "",
             "### Training throughput (images/s, STNNet, SGD with momentum)", "",
             "| batch | Gluon imperative | Gluon hybridized | Module | PyTorch eager | hybridized / PyTorch |",
             "|---|---|---|---|---|---|"]
    for b, row in res["train"].items():
        ratio = res["ratios"].get(f"train {b}: gluon hybridized / pytorch eager")
        lines.append(f"| {b} | {row['gluon imperative']:,.0f} | {row['gluon hybridized']:,.0f} | {row['module']:,.0f} | "
                     f"{_rate(row.get('pytorch eager'))} | {_times(ratio)} |")
    lines += _user_loop_lines(res)
    lines += ["", "### Inference throughput (images/s) and batch-1 latency", "",
              "| | Gluon hybridized | exported SymbolBlock | ONNX Runtime | PyTorch eager | ONNX Runtime / PyTorch |",
              "|---|---|---|---|---|---|"]
    names = ["gluon hybridized", "exported SymbolBlock", "onnxruntime", "pytorch eager"]
    for b, row in res["infer"].items():
        cells = [f"{row[n]:,.0f}" if n in row else "n/a" for n in names]
        ratio = res["ratios"].get(f"infer {b}: onnxruntime / pytorch eager")
        lines.append(f"| batch {b} | " + " | ".join(cells) + f" | {_times(ratio)} |")
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


def _user_loop_lines(res: dict) -> list:
    """The table of the user-written Gluon loops (measured in the same rounds as the training table)."""
    threads = res.get("user_loop_threads") or {}
    lines = ["", "### Your own Gluon loop (images/s, measured in the same rounds)", "",
             f"`gluon_user_loop`: a plain loop (`import mxnet` first, `net.hybridize()`, `gluon.Trainer`, "
             f"`mx.nd.array` batches, the loss read every step), {_threads(threads.get('gluon_user_loop'))}; "
             "`gluon_user_loop_fast`: the same loop with the library's speed helpers (`examples/fast_loop.py`), "
             f"{_threads(threads.get('gluon_user_loop_fast'))}.", "",
             "| batch | gluon_user_loop | gluon_user_loop_fast | PyTorch eager | user loop / PyTorch "
             "| fast loop / PyTorch | fast / plain |",
             "|---|---|---|---|---|---|---|"]
    for b, row in res["train"].items():
        ratios = [res["ratios"].get(f"train {b}: {name}") for name in (
            "gluon_user_loop / pytorch eager", "gluon_user_loop_fast / pytorch eager",
            "gluon_user_loop_fast / gluon_user_loop")]
        lines.append(f"| {b} | {_rate(row.get('gluon_user_loop'))} | {_rate(row.get('gluon_user_loop_fast'))} | "
                     f"{_rate(row.get('pytorch eager'))} | " + " | ".join(_times(r) for r in ratios) + " |")
    return lines


def inference_lines(payload: dict, model_name: str) -> list:
    """The Markdown report of :func:`stn_gluon.bench.inference_report`'s results."""
    mx_r, ort_r = payload["results"]["mxnet"], payload["results"]["onnxruntime"]
    lines = ["| measure | MXNet (hybridized) | ONNX Runtime | ONNX Runtime / MXNet |", "|---|---|---|---|"]
    for batch in payload["batches"]:
        lines.append(f"| throughput, batch {batch} (images/s) | {mx_r['throughput'][batch]:,.0f} | "
                     f"{ort_r['throughput'][batch]:,.0f} | {_times(payload['ratios'][batch])} |")
    for q in ("p50", "p99"):
        if q in mx_r["latency_ms"]:
            a, b = mx_r["latency_ms"][q], ort_r["latency_ms"][q]
            lines.append(f"| latency batch 1, {q} (ms) | {a:.3f} | {b:.3f} | {a / b:.2f}x faster |")
    info = machine_info()
    lines += ["", f"Model: {model_name}. Each backend in its own process, measured in turns; ratios are medians "
                  f"of the ratios within each round. Machine: {info['cpu_count']} CPUs ({info['processor']}), "
                  f"MXNet {info['mxnet']}, OMP_NUM_THREADS={info['omp_num_threads']}, "
                  f"ONNX Runtime threads={payload['threads'] or info['cpu_count']} ({payload['ort_mode']})."]
    return lines
