"""Plots: training curves and what the spatial transformer does to a batch."""

import os
import re
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .._runtime.files import atomic_path  # noqa: E402
from ..data.normalization import as_channel_values  # noqa: E402

if TYPE_CHECKING:
    from ..nn.explain import ExplainedBatch, Region
    from .reporting import History

__all__ = ["make_grid", "plot_stn_grid", "plot_explained", "plot_curves", "plot_samples", "plot_stn_comparison",
           "default_visualize_out"]


def default_visualize_out(prefix: str, dataset: str) -> str:
    """``stn-gluon visualize``'s default PNG: ``stn_grid-<run>-<dataset>.png`` in the current folder.

    prefix: the model's export prefix (``runs/demo/model``), whose folder names
    the run. Never a file of the run itself (its own ``stn_grid.png`` stays).
    """
    run = os.path.basename(os.path.dirname(os.path.abspath(prefix))) or "model"
    if ":" in dataset:  # images from disk (folder:PATH ...): the kind and the path's last name
        kind, path = dataset.split(":", 1)
        last = os.path.basename(os.path.normpath(path))
        dataset = f"{kind}-{os.path.splitext(last)[0] if kind != 'folder' else last}"
    return f"stn_grid-{run}-{re.sub(r'[^A-Za-z0-9._-]+', '-', dataset)}.png"


def make_grid(images: Any, nrow: int = 8, pad: int = 2, pad_value: Optional[float] = None) -> np.ndarray:
    """Tile ``(N, H, W)`` or ``(N, C, H, W)`` (C = 1 or 3) images into one ``(H', W'[, 3])`` array.

    pad_value: the gaps' value (default: the images' maximum, white).
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    n = len(x)
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    h, w = x.shape[1:3]
    grid = np.ones((nrows * (h + pad) + pad, ncol * (w + pad) + pad) + x.shape[3:], np.float32)
    grid *= (float(x.max()) if n else 1.0) if pad_value is None else pad_value
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = x[i]
    return grid


def _pixels(images: Any, mean: Any, std: Any) -> np.ndarray:
    """Normalised ``(N, C, H, W)`` images back in [0, 1] pixel units (``mean``/``std``: one number or one per
    channel)."""
    x = np.asarray(images, dtype=np.float32)
    c = x.shape[1]
    return x * as_channel_values(std, c, "std") + as_channel_values(mean, c, "mean")


def _savefig(fig: Any, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _tile_origin(i: int, n: int, nrow: int, shape: Sequence[int], pad: int = 2) -> Tuple[int, int]:
    """Top-left corner ``(x, y)`` of tile ``i`` of :func:`make_grid` (tiles of ``shape`` = (H, W))."""
    ncol = min(nrow, n)
    r, c = divmod(i, ncol)
    return pad + c * (shape[1] + pad), pad + r * (shape[0] + pad)


def plot_stn_grid(inputs: np.ndarray, outputs: np.ndarray, path: str, mean: Any = 0.0, std: Any = 1.0,
                  title: Optional[str] = None, nrow: int = 8, regions: Optional[List["Region"]] = None,
                  predicted: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None) -> str:
    """Save a batch of inputs beside what the STN made of them.

    inputs: ``(N, C, H, W)``; outputs: ``(N, C, H_out, W_out)``; both
    normalised with ``mean``/``std``, shown back in pixel values. regions:
    one :data:`stn_gluon.nn.explain.Region` per input, outlined on it (the
    sampling grid's border and grid lines); predicted ``(N,)``: written on each
    output, in red where it differs from ``labels`` ``(N,)``.
    """
    inputs, outputs = np.asarray(inputs), np.asarray(outputs)
    n = len(inputs)
    rows = -(-n // max(1, min(nrow, n)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 1.0 + 0.56 * max(rows, 2)))
    for ax, imgs, name in ((axes[0], inputs, "Inputs, sampled region outlined" if regions else "Dataset images"),
                           (axes[1], outputs, "Transformed images" + (", predicted class" if predicted is not None
                                                                      else ""))):
        grid = np.clip(make_grid(_pixels(imgs, mean, std), nrow=nrow, pad_value=0.45 if regions else None), 0, 1)
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name)
        ax.axis("off")
        ax.set_xlim(-0.5, grid.shape[1] - 0.5)
        ax.set_ylim(grid.shape[0] - 0.5, -0.5)
    for i, region in enumerate(regions or []):
        ox, oy = _tile_origin(i, n, nrow, inputs.shape[2:])
        shift = np.array([ox - 0.5, oy - 0.5])  # imshow puts pixel centres on integers: the edge is at -0.5
        outline = np.asarray(region["outline"]) + shift
        for line in region["lines"]:
            pts = np.asarray(line) + shift
            axes[0].plot(pts[:, 0], pts[:, 1], color="#29b6f6", linewidth=0.35, alpha=0.6)
        axes[0].plot(outline[:, 0], outline[:, 1], color="#29b6f6", linewidth=1.0)
    if predicted is not None:
        size = max(5.0, min(9.0, 60.0 / min(nrow, n)))
        for i, label in enumerate(np.asarray(predicted)):
            ox, oy = _tile_origin(i, n, nrow, outputs.shape[2:])
            wrong = labels is not None and int(labels[i]) != int(label)
            axes[1].text(ox + 0.5, oy + 0.5, str(int(label)), color="#ff1744" if wrong else "#76ff03",
                         fontsize=size, fontweight="bold", ha="left", va="top")
    if title:
        fig.suptitle(title)
    _savefig(fig, path)
    return path


def plot_explained(batch: "ExplainedBatch", path: str, title: Optional[str] = None, nrow: int = 8) -> str:
    """:func:`plot_stn_grid` of an :class:`~stn_gluon.nn.explain.ExplainedBatch`: regions and predictions shown."""
    errors = None if batch.labels is None else int((batch.predicted != batch.labels).sum())
    wrong = "" if errors is None else "; all read right" if errors == 0 else f"; {errors} read wrong, in red"
    return plot_stn_grid(batch.inputs, batch.warped, path, batch.mean, batch.std,
                         title=(title + "\n" if title else "") + f"{len(batch.inputs)} test images{wrong}",
                         nrow=nrow, regions=batch.regions, predicted=batch.predicted, labels=batch.labels)


def plot_curves(history: "History", path: str, title: Optional[str] = None, evaluated: str = "test") -> str:
    """Save loss and accuracy per epoch (train and test) from a :class:`~stn_gluon.train.reporting.History`;
    evaluated: what the history's ``test_*`` columns evaluated (``"validation"`` for images from disk)."""
    epochs = history.column("epoch")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, history.column("train_loss"), "o-", label="train")
    ax_loss.plot(epochs, history.column("test_loss"), "s-", label=evaluated)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * a for a in history.column("train_acc")], "o-", label="train")
    ax_acc.plot(epochs, [100 * a for a in history.column("test_acc")], "s-", label=evaluated)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _savefig(fig, path)
    return path



def plot_samples(images: np.ndarray, labels: np.ndarray, path: str, title: Optional[str] = None,
                 nrow: int = 8) -> str:
    """Save a grid of dataset images ``uint8 (N, H, W)`` or ``(N, C, H, W)`` with their labels in the title."""
    n = len(images)
    fig, ax = plt.subplots(figsize=(7, 7 * (-(-n // nrow)) / min(nrow, max(n, 1)) + 0.6))
    ax.imshow(make_grid(np.asarray(images[:n], np.float32) / 255.0, nrow=nrow), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title((title + "\n" if title else "") + "labels: " + " ".join(str(int(v)) for v in labels[:24])
                 + (" ..." if n > 24 else ""), fontsize=9)
    _savefig(fig, path)
    return path


def plot_stn_comparison(inputs: np.ndarray, outputs: Mapping[str, np.ndarray], path: str, mean: Any = 0.0,
                        std: Any = 1.0, title: Optional[str] = None) -> str:
    """Save one row of inputs, then one row per STN of what it made of them.

    inputs: ``(N, C, H, W)``; outputs: ``{name: (N, C, H_out, W_out)}``; all
    normalised with ``mean``/``std``.
    """
    rows = [("input", inputs)] + list(outputs.items())
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.25 * len(rows) + 0.6), squeeze=False)
    for ax, (name, imgs) in zip(axes[:, 0], rows):
        ax.imshow(np.clip(make_grid(_pixels(imgs, mean, std), nrow=len(imgs)), 0, 1),
                  cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    _savefig(fig, path)
    return path
