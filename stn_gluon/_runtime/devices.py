"""Parsing ``--ctx`` strings into MXNet contexts."""
from typing import Any, List, Sequence

import mxnet as mx

from .errors import StnGluonError

__all__ = ["parse_ctx", "format_ctx"]


def parse_ctx(spec: Any) -> List[Any]:
    """``"cpu"``, ``"cpu:0,1"``, ``"gpu"``, ``"gpu:0"``, ``"gpu:0,1"`` -> list of ``mx.Context``.

    Several ids train data-parallel. Asking for a GPU that this MXNet build
    cannot see is an error, never a silent CPU run.
    """
    text = str(spec).strip().lower()
    kind, _, ids = text.partition(":")
    if kind not in ("cpu", "gpu"):
        raise StnGluonError(f"ctx {spec!r}: expected cpu, cpu:0,1, gpu:0 or gpu:0,1", params=("ctx",))
    try:
        id_list = [int(i) for i in ids.split(",")] if ids else [0]
    except ValueError:
        raise StnGluonError(f"ctx {spec!r}: device ids must be integers, e.g. gpu:0,1", params=("ctx",)) from None
    if any(i < 0 for i in id_list) or len(set(id_list)) != len(id_list):
        raise StnGluonError(f"ctx {spec!r}: device ids must be distinct and >= 0", params=("ctx",))
    if kind == "gpu":
        available = mx.context.num_gpus()
        missing = [i for i in id_list if i >= available]
        if missing:
            raise StnGluonError(
                f"ctx {spec}: gpu {missing[0]} requested but this MXNet sees {available} GPU(s)"
                + ("; install a CUDA build such as mxnet-cu117==1.9.1" if available == 0 else ""), params=("ctx",))
        return [mx.gpu(i) for i in id_list]
    return [mx.cpu(i) for i in id_list]


def format_ctx(ctx_list: Sequence[Any]) -> str:
    """``[cpu(0), cpu(1)]`` -> ``"cpu:0,1"``."""
    return f"{ctx_list[0].device_type}:" + ",".join(str(c.device_id) for c in ctx_list)
