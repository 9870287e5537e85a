"""The runtime x opset parity table of docs/export-onnx.md: max |difference| from MXNet, far from the identity.

    OMP_NUM_THREADS=1 python scripts/onnx_parity_table.py            # prints the Markdown table

For each transform family (affine, attention, projective, tps) an STNNet (1x28x28, MNIST's shape) with random
weights and a localization regressor set far from the identity (rotation, shear, zoom, perspective, bent
control points, shifts past the border), and a flow-warp block (3x32x48 image, flows of up to 1.5 images in
pixels, most of the grid off the image), each exported once per opset (16..20) and run in ONNX Runtime,
ONNX's reference evaluator and OpenVINO (f32) on batches of 1, 7 and 64 (the reference evaluator, pure
Python, on 7 only). Each cell: the largest |logit difference| over the four families, then the largest
|difference| of the warped images (the STNs' and the flow warp's).
"""
import argparse
import os
import sys
import tempfile

import mxnet as mx
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import stn_gluon as sg  # noqa: E402
from stn_gluon.export.onnx import OPSETS, export_graph, export_onnx  # noqa: E402
from stn_gluon.export.runtimes import RUNTIMES, load_runtime, runtime_version  # noqa: E402

FAMILIES = ("affine", "attention", "projective", "tps")
FAR = {"affine": [0.35, -0.95, 0.9, 0.85, 0.55, -0.7], "attention": [0.45, 0.6, -0.5],
       "projective": [0.7, 0.4, 0.5, -0.3, 1.2, -0.6, 0.35, -0.25]}


def stn_net(family):
    mx.random.seed(0)
    net = sg.STNNet(transform=family, return_theta=True)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 1, 28, 28)))
    reg = net.stn.regressor
    reg.weight.set_data(mx.nd.array(np.random.RandomState(1).normal(0, 0.1, reg.weight.shape)))
    identity = np.array(net.stn.transform.identity())
    bias = FAR.get(family, identity + np.random.RandomState(5).uniform(-0.6, 0.6, identity.shape))
    reg.bias.set_data(mx.nd.array(bias))
    return net


class FlowWarp(mx.gluon.HybridBlock):
    def hybrid_forward(self, F, image, flow):
        return F.BilinearSampler(image, F.GridGenerator(flow, transform_type="warp"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    args = parser.parse_args(argv)
    rng = np.random.RandomState(0)
    logit_diff = {(r, o): 0.0 for r in args.runtimes for o in OPSETS}
    image_diff = dict(logit_diff)
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            net = stn_net(family)
            batches = {b: rng.normal(0, 1, (b, 1, 28, 28)).astype(np.float32) for b in (1, 7, 64)}
            want = {b: (net(mx.nd.array(x))[0].asnumpy(), net.stn(mx.nd.array(x))[0].asnumpy())
                    for b, x in batches.items()}
            for opset in OPSETS:
                path = os.path.join(tmp, f"{family}-{opset}.onnx")
                export_onnx(net, path, opset=opset)
                for runtime in args.runtimes:
                    run = load_runtime(runtime, path)
                    for b, x in batches.items():
                        if runtime == "reference" and b != 7:  # pure Python: batch 7 only (1 is in the tests)
                            continue
                        logits, _, _, warped = run({"data": x})
                        logit_diff[runtime, opset] = max(logit_diff[runtime, opset],
                                                         float(np.abs(logits - want[b][0]).max()))
                        image_diff[runtime, opset] = max(image_diff[runtime, opset],
                                                         float(np.abs(warped - want[b][1]).max()))
        warp = FlowWarp()
        warp.hybridize()
        warp(mx.nd.zeros((1, 3, 32, 48)), mx.nd.zeros((1, 2, 32, 48)))
        warp.export(os.path.join(tmp, "warp"))
        for opset in OPSETS:
            path = os.path.join(tmp, f"warp-{opset}.onnx")
            export_graph(os.path.join(tmp, "warp"), path, {"data0": (3, 32, 48), "data1": (2, 32, 48)}, opset=opset)
            for runtime in args.runtimes:
                run = load_runtime(runtime, path)
                for b in (7,) if runtime == "reference" else (1, 7, 64):
                    image = rng.normal(0, 1, (b, 3, 32, 48)).astype(np.float32)
                    flow = rng.uniform(-72, 72, (b, 2, 32, 48)).astype(np.float32)
                    expected = warp(mx.nd.array(image), mx.nd.array(flow)).asnumpy()
                    got = run({"data0": image, "data1": flow})[0]
                    image_diff[runtime, opset] = max(image_diff[runtime, opset], float(np.abs(got - expected).max()))
    names = {"onnxruntime": "ONNX Runtime", "reference": "onnx ReferenceEvaluator", "openvino": "OpenVINO (f32)"}
    print("| runtime | " + " | ".join(f"opset {o}" for o in OPSETS) + " |")
    print("|---|" + "---|" * len(OPSETS))
    for runtime in args.runtimes:
        cells = [f"{logit_diff[runtime, o]:.1e} / {image_diff[runtime, o]:.1e}" for o in OPSETS]
        print(f"| {names[runtime]} {runtime_version(runtime)} | " + " | ".join(cells) + " |")
    print(f"\nmxnet {mx.__version__}; cells: max |logit difference| / max |warped-image difference|.")


if __name__ == "__main__":
    main()
