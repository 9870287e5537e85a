#!/usr/bin/env python
"""A fast training loop of your own around STNNet: what makes ``stn-gluon train`` fast, in 40 lines.

A plain Gluon loop (``import mxnet`` first, ``mx.nd.array`` batches,
``gluon.Trainer``, the loss read every step) trains STNNet at about the
PyTorch tutorial's speed on a small CPU; ``stn-gluon train`` runs faster
with four things that are public, marked (1)-(4) below:

1. One OpenMP thread per physical core: ``OMP_NUM_THREADS``, set before
   ``mxnet`` loads (MXNet on its own takes half the CPUs, counting on
   hyper-threads; ``stn-gluon train`` sets it for you, a script sets it
   itself). Below: to :func:`stn_gluon._runtime.threads.physical_cores`
   unless you set it.
2. :func:`stn_gluon.train.gluon.make_trainer`: a ``gluon.Trainer`` whose
   optimizer updates all parameters in one fused call.
3. :func:`stn_gluon.data.mnist.to_ndarray`: batches wrapped without a blocking
   copy (``mx.nd.array`` waits for the engine to finish the steps before).
4. :class:`stn_gluon.train.gluon.RunAhead`: Python queues a few steps ahead of
   the engine instead of waiting every step; the loss and accuracy sums
   stay on the device and are read once per epoch.

And a static graph: ``hybridize(static_alloc=True, static_shape=True)``,
with every batch the same size. ``stn-gluon bench speed`` times this loop
(``gluon_user_loop_fast``) beside the plain one (``gluon_user_loop``).

    python examples/fast_loop.py [--data-dir DIR] [--epochs 1] [--batch-size 64] [--steps N]
"""
import os

import stn_gluon  # before mxnet: numpy's aliases MXNet needs on Python 3.12; it sets no thread count
from stn_gluon._runtime.threads import describe_threads, physical_cores

os.environ.setdefault("OMP_NUM_THREADS", str(physical_cores()))  # (1) before mxnet loads: its OpenMP pool

import argparse  # noqa: E402
import time  # noqa: E402

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from stn_gluon.data.mnist import BACKGROUND, load_mnist, normalize, to_ndarray  # noqa: E402
from stn_gluon.nn.architecture import default_initializer  # noqa: E402
from stn_gluon.train.gluon import RunAhead, make_trainer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: as stn-gluon train finds it)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the whole training set)")
    args = parser.parse_args(argv)

    print(describe_threads())
    mnist = load_mnist(args.data_dir)
    images, labels = mnist.train_images, mnist.train_labels.astype(np.float32)
    net = stn_gluon.STNNet(dropout=0.3, fill=BACKGROUND, loc_lr_mult=0.1)
    net.initialize(default_initializer())
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = make_trainer(net.collect_params(), "sgd", {"learning_rate": 0.02, "momentum": 0.9, "wd": 5e-4})  # (2)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    batch = args.batch_size
    steps = min(args.steps or len(images), len(images) // batch)  # whole batches only: one static shape

    for epoch in range(args.epochs):
        order = np.random.RandomState(epoch).permutation(len(images))
        run_ahead, loss_sum, correct = RunAhead(), mx.nd.zeros(1), mx.nd.zeros(1)
        tic = time.perf_counter()
        for i in range(steps):
            idx = np.sort(order[i * batch:(i + 1) * batch])
            x, y = to_ndarray(normalize(images[idx])), to_ndarray(labels[idx])  # (3)
            with autograd.record():
                out = net(x)
                loss = loss_fn(out, y)
            loss.backward()
            trainer.step(batch)
            run_ahead.push(loss)  # (4) waits only when more than a few steps are queued
            loss_sum += loss.sum()
            correct += (out.argmax(axis=1) == y).sum()
        seen = steps * batch
        print(f"epoch {epoch + 1}: loss {loss_sum.asscalar() / seen:.4f}, "
              f"accuracy {correct.asscalar() / seen:.4f}, {seen / (time.perf_counter() - tic):,.0f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
