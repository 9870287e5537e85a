"""Opening ONNX files as the whole project does: the metadata an export writes, and ONNX Runtime CPU sessions."""
import json
from typing import TYPE_CHECKING, Any, Dict, Union

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["read_metadata", "decode_metadata", "cpu_session"]


#: The metadata values :func:`export_onnx` writes as JSON.
_JSON_METADATA = ("input_shape", "mean", "std", "classes", "source", "inputs")


def decode_metadata(props: Dict[str, str]) -> Dict[str, Any]:
    """Metadata properties as an export wrote them -> values (the JSON ones decoded)."""
    out: Dict[str, Any] = dict(props)
    for key in _JSON_METADATA:
        if key in props:
            out[key] = json.loads(props[key])
    return out


def read_metadata(onnx_model: "ModelProto") -> Dict[str, Any]:
    """The metadata :func:`export_onnx` wrote, decoded -> dict."""
    return decode_metadata({p.key: p.value for p in onnx_model.metadata_props})


def cpu_session(model: "Union[str, bytes]", threads: int = 1) -> Any:
    """An ONNX Runtime CPU session as the project runs them: every graph optimization, ``threads`` intra-op
    threads and one inter-op thread, no spinning while a thread waits (a spinning pool loses its share of a
    busy machine), warnings only. model: a path or the model's bytes. ORT's own errors pass through."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no notes about initializers MXNet's converters left unused
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        options.add_session_config_entry(key, "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
