"""The competitors of ``stn-gluon bench speed``: MXNet Gluon, the Module API and ONNX Runtime.

Each factory builds what it times and returns a callable: a training
``step()`` or an inference ``call()``. :data:`FACTORIES` names them (and the
PyTorch peer's, :mod:`stn_gluon.bench.torch_peer`) for the worker processes
of :mod:`stn_gluon.bench.harness`. Every net is STNNet as ``stn-gluon
train`` builds it; training steps use SGD with momentum on the fixed
in-memory batches of :func:`~stn_gluon.bench.harness.train_batches` (no
augmentation), so that every competitor does the same arithmetic and only
the way it is driven differs.

Three Gluon training loops:

- ``gluon_train``: the step of :func:`stn_gluon.train.gluon.fit`;
- ``gluon_user_loop``: a plain loop as users write it from the Gluon
  tutorials (``net.hybridize()``, ``gluon.Trainer``, ``mx.nd.array``
  batches, the loss read every step), started as a user's script: its
  worker imports ``mxnet`` before ``stn_gluon``, with the user's own
  ``OMP_NUM_THREADS`` (unset: MXNet's own default, half the logical CPUs);
- ``gluon_user_loop_fast``: the same loop with the library's public speed
  helpers, as in ``examples/fast_loop.py``.

This module imports no MXNet: each worker process loads only the framework of the competitor it builds (the
factories import the MXNet side when called), so the PyTorch and ONNX Runtime workers never load it.
"""
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from ..export.onnx_model import OnnxModel
from .harness import infer_input, train_batches
from .torch_peer import torch_infer_call, torch_train_step

if TYPE_CHECKING:
    from mxnet import gluon

__all__ = ["STATIC", "SGD", "bench_net", "gluon_train_step", "gluon_user_loop_step", "gluon_user_loop_fast_step",
           "module_train_step", "fit_train_step", "exported_model", "gluon_infer_call", "symbolblock_infer_call", "onnx_infer_call",
           "FACTORIES"]

#: ``hybridize()`` settings of the library's training and inference: one static graph, memory planned once.
STATIC = dict(static_alloc=True, static_shape=True)
#: The optimizer settings of every training competitor.
SGD = {"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4}


def bench_net(size: int = 28, hybridize: bool = True) -> "gluon.HybridBlock":
    """STNNet built and initialised as ``stn-gluon train`` builds it, for ``size`` x ``size`` input.

    hybridize: with :data:`STATIC` (``False``: left imperative).
    """
    import mxnet as mx

    from ..nn.architecture import initialize_net  # lazy: loads MXNet (module doc)
    from ..train.recipes import TrainConfig, build_net  # lazy: loads MXNet (module doc)

    net = build_net(TrainConfig(), (1, size, size), 10)
    initialize_net(net, [mx.cpu()])
    if hybridize:
        net.hybridize(**STATIC)
    return net


def _gluon_loop(net: Any, trainer: Any, batch: int, size: int, wrap: Callable, after_step: Callable) -> Callable[[], None]:
    """``step()``: one turn of the usual Gluon loop over the fixed batches.

    ``wrap`` turns a NumPy batch into an NDArray; ``after_step(loss)`` ends
    the step. ``step.sync`` waits for the engine.
    """
    import mxnet as mx
    from mxnet import autograd, gluon

    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    xs, ys = train_batches(batch, size)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] = (state["i"] + 1) % len(xs)
        x, y = wrap(xs[i]), wrap(ys[i])
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)
        after_step(loss)
    step.sync = mx.nd.waitall  # type: ignore[attr-defined]
    return step


def gluon_train_step(batch: int, size: int = 28, hybridize: bool = True) -> Callable[[], None]:
    """A training step of STNNet as in :func:`stn_gluon.train.gluon.fit`, data from memory.

    The fused optimizer update (``make_trainer``), batches wrapped without a
    blocking copy (``to_ndarray``), the loop a few steps ahead of the engine
    (``RunAhead``; ``step.sync`` drains it).
    """
    from ..data.mnist import to_ndarray  # lazy: loads MXNet (module doc)
    from ..train.gluon import RunAhead, make_trainer  # lazy: loads MXNet (module doc)

    net = bench_net(size, hybridize)
    trainer = make_trainer(net.collect_params(), "sgd", SGD)
    return _gluon_loop(net, trainer, batch, size, to_ndarray, RunAhead().push)


def fit_train_step(batch: int, size: int = 28) -> Callable[[], None]:
    """A step of :func:`stn_gluon.train.gluon.fit`'s own loop: its ``train_step``, run-ahead and loss/accuracy sums.

    The data are the fixed in-memory batches (no augmentation, no data
    pipeline): what differs between thread settings is the arithmetic.
    """
    import mxnet as mx
    from mxnet import gluon

    from ..data.mnist import to_ndarray  # lazy: loads MXNet (module doc)
    from ..train.gluon import RunAhead, make_trainer, train_step  # lazy: loads MXNet (module doc)

    net = bench_net(size, True)
    trainer = make_trainer(net.collect_params(), "sgd", SGD)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    xs, ys = train_batches(batch, size)
    ctx = [mx.cpu()]
    run_ahead, loss_sum, correct = RunAhead(), mx.nd.zeros(1), mx.nd.zeros(1)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] = (state["i"] + 1) % len(xs)
        outs, labels, losses = train_step(net, trainer, loss_fn, to_ndarray(xs[i]), to_ndarray(ys[i]), ctx)
        run_ahead.push(losses[0])
        loss_sum[:] += losses[0].sum()
        correct[:] += (outs[0].argmax(axis=1) == labels[0]).sum()
    step.sync = mx.nd.waitall  # type: ignore[attr-defined]
    return step


def gluon_user_loop_step(batch: int, size: int = 28) -> Callable[[], None]:
    """A step of a plain user-written Gluon loop: ``hybridize()``, ``gluon.Trainer``, ``mx.nd.array``, loss read."""
    import mxnet as mx
    from mxnet import gluon

    net = bench_net(size, hybridize=False)
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", SGD)
    return _gluon_loop(net, trainer, batch, size, mx.nd.array, lambda loss: loss.mean().asscalar())


def gluon_user_loop_fast_step(batch: int, size: int = 28) -> Callable[[], None]:
    """The user loop with the public speed helpers (``examples/fast_loop.py``); the loss is summed on the device."""
    import mxnet as mx

    from ..data.mnist import to_ndarray  # lazy: loads MXNet (module doc)
    from ..train.gluon import RunAhead, make_trainer  # lazy: loads MXNet (module doc)

    net = bench_net(size, hybridize=True)
    trainer = make_trainer(net.collect_params(), "sgd", SGD)
    run_ahead, loss_sum = RunAhead(), mx.nd.zeros(1)

    def after_step(loss: Any) -> None:
        loss_sum[:] += loss.sum()
        run_ahead.push(loss)
    return _gluon_loop(net, trainer, batch, size, to_ndarray, after_step)


def module_train_step(batch: int, size: int = 28) -> Callable[[], None]:
    """A training step of the symbolic STN classifier with ``mx.mod.Module``."""
    import mxnet as mx

    from ..data.mnist import BACKGROUND, to_ndarray  # lazy: loads MXNet (module doc)
    from ..nn.architecture import default_initializer  # lazy: loads MXNet (module doc)
    from ..symbol import get_symbol  # type: ignore[import-not-found]  # lazy: loads MXNet (module doc)

    mod = mx.mod.Module(get_symbol(target_shape=(size, size), lr_mult=0.1, dropout=0.3, fill=BACKGROUND))
    mod.bind(data_shapes=[("data", (batch, 1, size, size))], label_shapes=[("softmax_label", (batch,))])
    mod.init_params(default_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params=SGD)
    xs, ys = train_batches(batch, size)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] = (state["i"] + 1) % len(xs)
        mod.forward_backward(mx.io.DataBatch([to_ndarray(xs[i])], [to_ndarray(ys[i])]))
        mod.update()
        mod.get_outputs()[0].wait_to_read()
    return step


def exported_model(folder: str) -> tuple:
    """A randomly initialised STNNet (28 x 28) exported to ``folder`` -> ``(MXNet export prefix, .onnx path)``."""
    import mxnet as mx

    from ..export.onnx import export_onnx  # lazy: loads MXNet (module doc)
    from ..export.saved import export_block  # lazy: loads MXNet (module doc)

    prefix = os.path.join(folder, "model")
    export_block(bench_net(28, True), prefix, mx.nd.zeros((1, 1, 28, 28)),
                 meta=dict(input_shape=[1, 28, 28], input_name="data", mean=0.1307, std=0.3081))
    return prefix, export_onnx(folder, os.path.join(folder, "model.onnx"))


def gluon_infer_call(batch: int, size: int = 28) -> Callable[[], np.ndarray]:
    """Inference with the hybridized STNNet on one fixed batch (input copy and output read included)."""
    import mxnet as mx

    net = bench_net(size, True)
    x = infer_input(batch, (1, size, size))
    return lambda: net(mx.nd.array(x)).asnumpy()


def symbolblock_infer_call(batch: int, prefix: str, shape: tuple = (1, 28, 28)) -> Callable[[], np.ndarray]:
    """Inference with an exported model loaded back as a hybridized ``SymbolBlock``."""
    import mxnet as mx

    from ..export.saved import load_model  # lazy: loads MXNet (module doc)

    net = load_model(prefix).net
    net.hybridize(**STATIC)
    x = infer_input(batch, shape)
    return lambda: net(mx.nd.array(x)).asnumpy()


def onnx_infer_call(batch: int, path: str, shape: tuple = (1, 28, 28), threads: Optional[int] = None,
                    mode: str = "split") -> Callable[[], np.ndarray]:
    """Inference with ONNX Runtime (:class:`stn_gluon.export.onnx.OnnxModel`, logits only; ``threads``, ``mode`` as there)."""

    model = OnnxModel(path, threads=threads, mode=mode, outputs=["logits"])
    x = infer_input(batch, shape)
    return lambda: model.run(x)["logits"]


#: Every competitor's factory, by the kind name that the worker processes are given.
FACTORIES = {"gluon_train": gluon_train_step, "fit_train": fit_train_step, "gluon_user_loop": gluon_user_loop_step,
             "gluon_user_loop_fast": gluon_user_loop_fast_step, "module_train": module_train_step,
             "torch_train": torch_train_step, "gluon_infer": gluon_infer_call,
             "symbolblock_infer": symbolblock_infer_call, "onnx_infer": onnx_infer_call,
             "torch_infer": torch_infer_call}
