#!/usr/bin/env python
"""int8 quantization choices side by side: each variant of :class:`stn_gluon.export.int8.Int8Settings` against fp32.

    python scripts/int8_choices.py stn_cifar_resnet20_v1 --batch 64 --rounds 9
    python scripts/int8_choices.py stn_lenet "pt=per_channel=False" "all_int8=min_conv_channels=1"

The model is built from the zoo with random weights (throughput does not
depend on them), exported to ONNX and quantized once per variant; then fp32
and every variant are timed in turns (``rounds`` times, single-threaded ONNX
Runtime sessions). Printed: images per CPU-second of the calling thread and
per wall-second, and the median (min-max) over rounds of the int8/fp32 ratio
of CPU time, which stays steady on a shared machine. A variant is
``name=field=value,field=value`` (fields of ``Int8Settings``; values are
Python literals); the default list covers the choices docs/int8.md reports.
"""
import argparse
import ast
import dataclasses
import os
import sys
import tempfile

import numpy as np

DEFAULT_VARIANTS = [
    "default=",
    "per_tensor=per_channel=False",
    "qdq=quant_format='QDQ'",
    "full_range=reduce_range=False",  # --int8-target vnni: right only on CPUs with VNNI or AMX
    "s8s8=activations='int8'",
    "sym_activations=activation_symmetric=True",
    "asym_weights=weight_symmetric=False",
    "no_padding=pad_channels_to=0",
    "thin_convs_int8=min_conv_channels=1,pad_channels_to=0",
    "localization_int8=float_localization=False",
    "entropy=calibrate_method='Entropy'",
    "minmax=calibrate_method='MinMax'",
]


def parse_variant(text):
    from stn_gluon.export.int8 import Int8Settings

    name, _, fields = text.partition("=")
    values = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        values[key.strip()] = ast.literal_eval(value.strip())
    return name, dataclasses.replace(Int8Settings(), **values)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="zoo name: stn_lenet or stn_cifar_resnet20_v1")
    p.add_argument("variants", nargs="*", help="name=field=value,... (default: the list in this script)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0.3)
    args = p.parse_intermixed_args(argv)

    import mxnet as mx

    from stn_gluon.nn.architecture import initialize_net
    from stn_gluon.bench.harness import Clock, infer_input, interleaved_rates
    from stn_gluon.export.onnx import export_onnx
    from stn_gluon.export.onnx import cpu_session as session
    from stn_gluon.export.int8 import quantize_onnx
    from stn_gluon.nn.zoo import get_model

    shape = (1, 28, 28) if "lenet" in args.model else (3, 32, 32)
    net = get_model(args.model, input_shape=shape)
    initialize_net(net, [mx.cpu()])
    calibration = np.random.RandomState(0).normal(0, 1, (128,) + shape).astype(np.float32)
    x = infer_input(args.batch, shape)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, "fp32.onnx")
        export_onnx(net, fp32, input_shape=shape)
        sessions = {"fp32": session(fp32)}
        for text in args.variants or DEFAULT_VARIANTS:
            name, settings = parse_variant(text)
            path = os.path.join(tmp, f"{name}.onnx")
            quantize_onnx(fp32, path, calibration, settings=settings)
            sessions[name] = session(path)
        clocks = {k: Clock(lambda s=s: s.run(["logits"], {"data": x})) for k, s in sessions.items()}
        rates = interleaved_rates(clocks, args.batch, args.seconds, args.rounds)
    base = np.array(clocks["fp32"].cpu)
    print(f"{args.model}, batch {args.batch}, {args.rounds} rounds, one thread, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("| variant | images/CPU-s | images/s (wall) | int8/fp32 (CPU time) |")
    print("|---|---|---|---|")
    for name, clock in clocks.items():
        r = np.array(clock.cpu) / base
        print(f"| {name} | {np.median(clock.cpu):,.0f} | {rates[name]:,.0f} | "
              f"{np.median(r):.2f}x ({r.min():.2f}-{r.max():.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
