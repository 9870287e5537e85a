"""The PyTorch peer of ``stn-gluon bench speed``: the same network in PyTorch eager, when it is importable.

``F.affine_grid`` + ``F.grid_sample``, the reference tutorial's layers with
``stn-gluon train``'s dropout and background fill, as many threads as
MXNet's OpenMP pool, SGD with momentum on the same fixed batches.
"""
import importlib.util
import os
from typing import Any, Callable

import numpy as np

from .harness import infer_input, train_batches

__all__ = ["have_torch", "torch_net", "torch_train_step", "torch_infer_call"]


def have_torch() -> bool:
    """Whether PyTorch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def _import_torch() -> Any:
    """``torch``, imported where a peer needs it (so that listing the competitors does not load it)."""
    return importlib.import_module("torch")


def _set_threads(torch: Any) -> None:
    """PyTorch gets as many threads as MXNet's OpenMP pool (its own default may be fewer)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


def torch_net(size: int = 28, fill: float = 0.0, dropout: float = 0.3) -> Any:
    """STNNet in PyTorch (``torch.nn.Module``) for ``size`` x ``size`` input; the STN shows ``fill`` outside the image."""
    torch = _import_torch()
    nn, F = torch.nn, torch.nn.functional
    module: Any = nn.Module

    class TorchSTNNet(module):
        """The same network as STNNet, in PyTorch (the reference tutorial's layers)."""

        def __init__(self) -> None:
            super().__init__()
            self.loc = nn.Sequential(nn.Conv2d(1, 8, 7), nn.MaxPool2d(2, 2), nn.ReLU(True),
                                     nn.Conv2d(8, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU(True), nn.Flatten())
            loc_out = self.loc(torch.zeros(1, 1, size, size)).shape[1]
            self.fc_loc = nn.Sequential(nn.Linear(loc_out, 32), nn.ReLU(True), nn.Linear(32, 6))
            self.fc_loc[2].weight.data.zero_()
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
            self.conv1, self.conv2 = nn.Conv2d(1, 10, 5), nn.Conv2d(10, 20, 5)
            self.drop2d, self.drop = nn.Dropout2d(dropout), nn.Dropout(dropout)
            body_out = self._features(torch.zeros(1, 1, size, size)).shape[1]
            self.fc1, self.fc2 = nn.Linear(body_out, 50), nn.Linear(50, 10)

        def _features(self, x: Any) -> Any:
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.drop2d(self.conv2(x)), 2))
            return x.flatten(1)

        def forward(self, x: Any) -> Any:
            theta = self.fc_loc(self.loc(x)).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.size()), align_corners=True)
            x = F.grid_sample(x - fill, grid, align_corners=True, padding_mode="zeros") + fill
            return self.fc2(self.drop(F.relu(self.fc1(self._features(x)))))

    return TorchSTNNet()


def torch_train_step(batch: int, size: int = 28) -> Callable[[], None]:
    """A training step of the same network in PyTorch eager (SGD, momentum)."""
    from ..data.mnist import BACKGROUND  # lazy: loads MXNet; the ONNX Runtime worker imports this module

    torch = _import_torch()

    _set_threads(torch)
    net = torch_net(size, BACKGROUND)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    xs, ys = train_batches(batch, size)
    xs, ys = torch.from_numpy(xs), torch.from_numpy(ys).long()
    state = {"i": 0}

    def step() -> None:
        i = state["i"] = (state["i"] + 1) % len(xs)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xs[i]), ys[i])
        loss.backward()
        opt.step()
    return step


def torch_infer_call(batch: int, size: int = 28) -> Callable[[], np.ndarray]:
    """Inference with the PyTorch peer in eval mode under ``no_grad``."""
    from ..data.mnist import BACKGROUND  # lazy: loads MXNet; the ONNX Runtime worker imports this module

    torch = _import_torch()

    _set_threads(torch)
    net = torch_net(size, BACKGROUND).eval()
    x = infer_input(batch, (1, size, size))

    def call() -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()
    return call
