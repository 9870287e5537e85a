#!/usr/bin/env python
"""Classify digits with an exported STN model using nothing but ONNX Runtime and NumPy.

    python scripts/infer_onnx.py runs/demo/model.onnx digits.npy [more.npy ...]

Each ``.npy`` holds one image ``(28, 28)`` or a stack ``(N, 28, 28)``: uint8
0..255 or float 0..1, light digits on a dark background like MNIST. The
model's own metadata says how to normalise them.
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    session = ort.InferenceSession(argv[0], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    classes = json.loads(meta["classes"])
    _, c, h, w = json.loads(meta["input_shape"])
    outputs = [o.name for o in session.get_outputs()]
    for path in argv[1:]:
        pixels = np.load(path, allow_pickle=False)
        pixels = pixels.astype(np.float32) / (255.0 if pixels.dtype == np.uint8 else 1.0)
        x = ((pixels.reshape(-1, c, h, w) - mean) / std).astype(np.float32)
        result = dict(zip(outputs, session.run(outputs, {meta["input_name"]: x})))
        for i, probs in enumerate(result["probabilities"]):
            label = int(np.argmax(probs))
            line = f"{path}[{i}]: {classes[label]} (p={probs[label]:.4f})"
            if "theta" in result:
                line += " theta " + np.array2string(result["theta"][i], precision=3, separator=", ")
            print(line)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, ValueError, KeyError, ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.NoSuchFile, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
