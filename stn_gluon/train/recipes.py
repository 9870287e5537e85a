"""What a training run is: its configuration, the named recipes, and the network it builds.

This module alone knows it. :class:`TrainConfig` declares every knob once
(default, help, bounds: the ``train`` and ``train-symbol`` flags are generated
from it, see :mod:`stn_gluon._runtime.flags`); :data:`RECIPES` names whole recipes
(``--recipe fast``); :data:`DATASET_MODELS` says how a model looks at each
dataset (the STN's output size, pooling, localization net...);
:func:`resolve_architecture` turns a configuration into a concrete
:class:`Architecture` and :func:`build_net` builds it. The Gluon trainer
(:func:`stn_gluon.train.gluon.fit`), the Module trainer
(:func:`stn_gluon.train.module.fit_module`), the benchmarks and the CLI all
ask here.

Adding a knob: one :func:`~stn_gluon._runtime.flags.option` field below (and, if it
shapes the network, one line in :func:`resolve_architecture`).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import mxnet as mx

from ..data.distortions import get_dataset_spec
from ..data.sources import SPEC_HELP, LoadOptions, parse_input_size, parse_spec
from ..nn.architecture import BACKGROUND, IDSIA_MODELS, LENET_MODELS, Architecture, build_architecture
from ..nn.blocks import SaliencyLocalization
from ..nn.ops import get_transform
from .._runtime.errors import ConfigError
from .._runtime.flags import epoch_count, option, validate_fields

__all__ = ["TrainConfig", "RECIPES", "KVSTORES", "RUN_FIELDS", "OPTIMIZERS", "LR_MODES", "LOCALIZATIONS", "DatasetModels",
           "DATASET_MODELS", "FROM_DISK", "PLAIN_STN", "dataset_models", "recipe_notes", "resolve_architecture",
           "build_net", "load_options", "CHANNELS"]

OPTIMIZERS = ("sgd", "nag", "adam")
LR_MODES = ("cosine", "step", "linear", "poly", "constant")
LOCALIZATIONS = ("conv", "saliency")
#: How gradients are reduced: in one process (local, device) or by MXNet's parameter server (dist_*).
KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")

@dataclass(frozen=True)
class DatasetModels:
    """How models look at one dataset (its canvas: :class:`stn_gluon.data.distortions.DatasetSpec`).

    stn_target: the STN's output side (28: the STN normalises the digit to
    MNIST's size). baseline_target: the side the CNN baseline sees (its input
    is area-averaged down to it when smaller than the canvas). loc_pool:
    average pooling in front of the localization net. supersample: the
    sampler's anti-aliasing (points per output pixel along each axis).
    localization / init_scale / brightness_prior: the localization net of the
    transforms the saliency net can output (attention, affine), their initial
    zoom and the saliency net's prior toward bright cells; other transforms
    get :data:`PLAIN_STN`.
    """
    stn_target: int
    baseline_target: int
    loc_pool: int = 1
    supersample: int = 1
    localization: str = "conv"
    init_scale: float = 1.0
    brightness_prior: float = 0.0

    def stn_defaults(self, transform: str) -> Dict[str, Any]:
        """``localization``, ``init_scale``, ``brightness_prior`` of an STN of ``transform`` here."""
        if transform in SaliencyLocalization.TRANSFORMS:
            return dict(localization=self.localization, init_scale=self.init_scale,
                        brightness_prior=self.brightness_prior)
        return dict(PLAIN_STN)


#: The STN's defaults where a dataset sets none: the reference localization net at the identity.
PLAIN_STN: Dict[str, Any] = dict(localization="conv", init_scale=1.0, brightness_prior=0.0)

DATASET_MODELS: Dict[str, DatasetModels] = {
    "mnist": DatasetModels(28, 28),
    "mnist32": DatasetModels(32, 32),
    "rotated": DatasetModels(28, 28),
    "rts": DatasetModels(28, 42),
    "projective": DatasetModels(28, 28),
    "elastic": DatasetModels(28, 28),
    # starting on the central 0.6 (36 of 60 px; the digit is 28): affine 3.43 % error against 4.72 % from
    # the whole canvas, attention 3.23 % against 3.09 % (bench distortions, one run each)
    "cluttered": DatasetModels(60, 60, loc_pool=2, localization="saliency", init_scale=0.6),
    "noisy128": DatasetModels(28, 28, loc_pool=4, supersample=4, localization="saliency",
                              brightness_prior=5.0),
}


def dataset_value(text: str) -> str:
    """argparse type of ``--dataset``: a name of :data:`DATASET_MODELS` or a ``folder:``/``rec:``/``csv:`` spec."""
    try:
        parse_spec(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose {SPEC_HELP})") from None
    return text


#: How models look at images from disk (``folder:``, ``rec:``, ``csv:``): at the input size, the plain STN.
FROM_DISK = DatasetModels(0, 0)


def dataset_models(name: str) -> DatasetModels:
    """:class:`DatasetModels` of dataset ``name`` (:data:`FROM_DISK` for a ``folder:``/``rec:``/``csv:`` spec)."""
    if name in DATASET_MODELS:
        return DATASET_MODELS[name]
    parse_spec(name)  # a ConfigError naming the dataset unless it is a spec
    return FROM_DISK


#: Named recipes: the fields each one sets differently from the default recipe.
RECIPES: Dict[str, Dict[str, Any]] = {
    # the 20-epoch recipe: 99.5 % on MNIST (docs/benchmarks.md)
    "default": {},
    # the shortest way to 99.0 % on a 2-core CPU (docs/benchmarks.md, `bench time-to-accuracy --recipe fast`)
    "fast": dict(epochs=1.25, batch_size=32, optimizer="nag", lr=0.03, warmup_epochs=0.1, dropout=0.0,
                 augment=False, test_each_epoch=False),
    # traffic signs and other photographs (docs/own-images.md): the IDSIA network with its STN at 32x32, with
    # the brightness and colour jitter that kept both networks from overfitting in the traffic-sign work; no
    # random affine warp (the STN undoes the geometry) and the localization net at 0.3x the rate (0.1x and 1x
    # both trained worse on the synthetic signs)
    "signs": dict(model="stn_idsia", input_size="32,32", lr=0.05, epochs=12, color_jitter=0.3, augment=False,
                  loc_lr_mult=0.3),
}

#: Fields that say how to run, not what is trained: not part of a run's recipe.
RUN_FIELDS = ("recipe", "test_each_epoch", "ctx", "kvstore", "data_dir", "download", "save_dir", "resume", "hybridize",
              "progress", "overwrite", "memory_limit_mb", "loader_workers")
#: ``--channels``: from the data (3 if any image is in colour), grey, or RGB.
CHANNELS = ("auto", "1", "3")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; the ``train``/``train-symbol`` flags are these fields.

    Immutable: a changed copy is ``dataclasses.replace(cfg, epochs=5)``. ``None`` in an architecture field
    (``target_size`` ... ``brightness_prior``) means the dataset's value (:data:`DATASET_MODELS`); ``None`` as
    ``save_dir`` means ``runs/<model>`` (:meth:`resolved`, which the trainers apply).
    """
    recipe: str = option("default", "named recipe giving the defaults of the other flags",
                         choices=tuple(RECIPES))
    model: str = option("stn_lenet", "stn_lenet, lenet (no STN), or stn_<gluoncv zoo name>")
    transform: str = option("affine", "affine, attention, window (attention kept on the image), projective, "
                                      "tps (4x4 control points) or tps<k>")
    dataset: str = option("mnist", "the data: a name (the distorted sets are generated from MNIST once and "
                                   "cached), or images from disk: folder:PATH (a sub-folder per class; PATH/train, "
                                   "val, test are splits), rec:FILE.rec (im2rec, its .idx beside it) or csv:FILE "
                                   "(image path and label columns)", metavar="|".join(DATASET_MODELS) + "|SPEC",
                          type=dataset_value)
    test_dataset: Optional[str] = option(None, "images from disk: the test set (folder:, rec: or csv:; its labels map "
                                               "onto the training classes), for the final report only; none: the "
                                               "data's own test split", metavar="SPEC")
    val_split: float = option(0.1, "images from disk with no val split: the share of each class's training images "
                                   "held out (seeded) for the per-epoch evaluation; 0: none", minimum=0, maximum=0.9,
                              metavar="F")
    input_size: Optional[str] = option(None, "images from disk: H,W they are resized to when loaded; none: their size "
                                             "where all share one, else the median", metavar="H,W")
    channels: str = option("auto", "images from disk: 1 (grey) or 3 (RGB); auto: 3 if any image is in colour",
                           choices=CHANNELS)
    class_names: Optional[str] = option(None, "images from disk: a file of the class names, one a line in label "
                                              "order; none: the class folders' names, or the labels",
                                        metavar="FILE")
    csv_path_column: Optional[str] = option(None, "csv: the image path column; none: Filename, path, file or image",
                                            metavar="NAME")
    csv_label_column: Optional[str] = option(None, "csv: the label column; none: ClassId, label or class",
                                             metavar="NAME")
    digits: bool = option(False, "images from disk are digits like MNIST's (light on dark): MNIST's mean and std, a "
                                 "black background around them, and a digit model (the digit rules at predict and "
                                 "serve); off: photographs, their own per-channel mean and std")
    skip_unreadable: bool = option(False, "images from disk: leave unreadable images out (their count goes to "
                                          "metrics.json) instead of refusing the data")
    memory_limit_mb: float = option(4096.0, "images from disk: decoded pixels above this many MB are streamed from "
                                            "disk in batches instead of decoded once into memory (and cached); a tiny "
                                            "value streams any set",
                                    minimum=0, exclusive_minimum=True, metavar="MB")
    loader_workers: int = option(2, "processes that decode images from disk (once, or per batch when streamed)",
                                 minimum=0, metavar="N")
    color_jitter: float = option(0.0, "random brightness, contrast and saturation of each training image, this "
                                      "strong (0.3: factors 0.7..1.3; 0: off)", minimum=0, maximum=1,
                                metavar="S")
    target_size: Optional[int] = option(None, "side of the STN's output (baseline: of its input); "
                                              "none: the dataset's", minimum=12)
    loc_pool: Optional[int] = option(None, "average pooling in front of the localization net; none: the dataset's",
                                     minimum=1)
    supersample: Optional[int] = option(None, "STN anti-aliasing: k x k samples per output pixel; "
                                              "none: the dataset's", minimum=1)
    localization: Optional[str] = option(None, "conv (reference net + regressor) or saliency (attention, affine: "
                                               "soft-argmax over a score map); none: the dataset's",
                                         choices=LOCALIZATIONS)
    init_scale: Optional[float] = option(None, "the STN's initial zoom: 1 the identity, 0.5 the central half; "
                                               "none: the dataset's", minimum=0, maximum=4, exclusive_minimum=True)
    brightness_prior: Optional[float] = option(None, "saliency localization: initial scores = this times each "
                                                     "cell's mean intensity (0: flat); none: the dataset's",
                                               minimum=0)
    epochs: float = option(20, "training epochs; may be fractional (1.25: the last epoch stops a quarter of the "
                               "way in, where the lr schedule ends; the Module trainer takes whole epochs)",
                           minimum=0, exclusive_minimum=True, type=epoch_count)
    batch_size: int = option(64, "images per training step (split across --ctx devices); with a dist_* "
                                 "--kvstore, per worker", minimum=1)
    optimizer: str = option("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = option(0.02, "peak learning rate", minimum=0, exclusive_minimum=True)
    momentum: float = option(0.9, "momentum (sgd, nag)", minimum=0, maximum=1)
    lr_mode: str = option("cosine", "decay after the warm-up", choices=LR_MODES)
    lr_step_epochs: str = option("10,15", "epochs where --lr-mode step divides the lr by 10")
    warmup_epochs: float = option(1.0, "linear warm-up from lr/10 (at most a quarter of the run)", minimum=0)
    first_cycle_epochs: float = option(0.0, "cosine only: a first cosine cycle of this many epochs, then a warm "
                                            "restart (0: one cycle)", minimum=0)
    wd: float = option(5e-4, "weight decay (not on biases)", minimum=0)
    loc_lr_mult: float = option(Architecture.loc_lr_mult, "learning-rate multiplier of the localization network", minimum=0)
    dropout: float = option(Architecture.dropout, "dropout rate of the LeNet and IDSIA bodies", minimum=0,
                            maximum=0.99)
    seed: int = option(42, "seed of the initial weights, shuffling, augmentation and dropout")
    augment: bool = option(True, "random affine augmentation of the training batches",
                           negative_flag="--no-augment")
    test_each_epoch: bool = option(True, "evaluate the test set after every epoch",
                                   negative_flag="--test-at-end")
    ctx: str = option("cpu", "cpu, cpu:0,1, gpu:0 or gpu:0,1 (several: data-parallel)")
    kvstore: str = option("device", "how gradients are reduced: local or device (one process; device: on the "
                                    "--ctx devices), or dist_sync / dist_device_sync / dist_async: a job of "
                                    "several processes started by `stn-gluon launch` (docs/distributed.md)",
                          choices=KVSTORES)
    workers: int = option(1, "worker processes sharing each step (set from the kvstore): a step is batch_size x "
                             "workers images, the lr that of one process with that batch", minimum=1, cli=False)
    data_dir: Optional[str] = option(None, "folder with the four MNIST IDX files; none: $STN_GLUON_DATA, "
                                           "~/.mxnet/datasets/mnist, then the embedded sample")
    download: bool = option(False, "fetch MNIST with Gluon's downloader if no files are found (off: nothing "
                                   "uses the network unless asked)")
    save_dir: Optional[str] = option(None, "where checkpoints, the exported model, metrics and plots go; "
                                           "none: runs/<model>")
    resume: Optional[str] = option(None, "continue from the checkpoint in --save-dir (or the one given)",
                                   nargs="?", const="auto", metavar="CHECKPOINT")
    overwrite: bool = option(False, "replace the run already in --save-dir")
    hybridize: bool = option(True, "hybridize with static_alloc/static_shape", negative_flag="--no-hybridize")
    progress: bool = option(True, "progress bars", negative_flag="--no-progress")

    def resolved(self) -> "TrainConfig":
        """This configuration with ``save_dir``'s default (``runs/<model>``) filled in where it is ``None``."""
        return self if self.save_dir is not None else dataclasses.replace(self, save_dir=f"runs/{self.model}")

    @classmethod
    def from_recipe(cls, name: str = "default", **overrides: Any) -> "TrainConfig":
        """The named recipe (:data:`RECIPES`), with ``overrides`` on top."""
        if name not in RECIPES:
            raise ConfigError("recipe", f"{name!r}: choose {', '.join(RECIPES)}")
        return cls(**dict(RECIPES[name], recipe=name, **overrides))

    def validate(self) -> "TrainConfig":
        """Check every field; raises :class:`~stn_gluon._runtime.errors.ConfigError` naming the first bad one."""
        validate_fields(self)
        self.step_epochs()
        dataset_models(self.dataset)
        parse_input_size(self.input_size)
        if self.test_dataset is not None and parse_spec(self.test_dataset, "test_dataset") is None:
            raise ConfigError("test_dataset", f"{self.test_dataset!r}: a test set from disk: folder:PATH, "
                                              f"rec:FILE.rec or csv:FILE")
        try:
            get_transform(self.transform)
        except Exception as err:  # an unknown transform: name the parameter
            raise ConfigError("transform", f"{self.transform!r}: {str(err).split('; ', 1)[-1]}") from None
        _check_model_knobs(self)
        return self

    def step_epochs(self) -> List[int]:
        """``lr_step_epochs`` as integers."""
        try:
            return [int(e) for e in str(self.lr_step_epochs).split(",") if e.strip()]
        except ValueError:
            raise ConfigError("lr_step_epochs", f"{self.lr_step_epochs!r}: expected integers like 10,15") from None

    def recipe_fields(self) -> Dict[str, Any]:
        """The fields that define what is trained (all but :data:`RUN_FIELDS`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in RUN_FIELDS}

    def recipe_differences(self, saved: Dict[str, Any]) -> List[str]:
        """``["field saved -> this", ...]`` between a saved recipe and this one.

        A field the saved recipe predates counts as its default: defaults of
        new fields are what the code did before the field existed.
        """
        defaults = TrainConfig().recipe_fields()
        return [f"{k} {saved.get(k, defaults[k])!r} -> {v!r}" for k, v in self.recipe_fields().items()
                if saved.get(k, defaults[k]) != v]


def recipe_notes(name: str) -> str:
    """For a flag's help: the value each non-default recipe gives field ``name`` (``"; fast: 2"``)."""
    def shown(value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    return "".join(f"; {recipe}: {shown(values[name])}" for recipe, values in RECIPES.items() if name in values)


def load_options(cfg: TrainConfig) -> LoadOptions:
    """How ``cfg`` reads a dataset from disk (its flags of the same names)."""
    return LoadOptions(input_size=parse_input_size(cfg.input_size), channels=cfg.channels, val_split=cfg.val_split,
                       seed=cfg.seed, test=cfg.test_dataset, class_names=cfg.class_names,
                       skip_unreadable=cfg.skip_unreadable, memory_limit_mb=cfg.memory_limit_mb,
                       csv_path_column=cfg.csv_path_column, csv_label_column=cfg.csv_label_column,
                       workers=cfg.loader_workers, digits=cfg.digits)


def resolve_architecture(cfg: TrainConfig, input_shape: Sequence[int], num_classes: int = 10,
                         digits: Optional[bool] = None) -> Architecture:
    """The network ``cfg`` trains on inputs of ``input_shape`` ``(C, H, W)``.

    ``None`` fields of ``cfg`` take the dataset's values (:data:`stn_gluon.train.recipes.DATASET_MODELS`);
    the dataset's sizes apply to its own canvas only: other data keeps its size unless told.
    digits: whether the data are digits on black (default: ``cfg.dataset`` is one of MNIST's sets); outside the
    image the STN shows their normalised black, :data:`BACKGROUND`, other data its mean (0.0).
    """
    input_shape = tuple(int(v) for v in input_shape)
    models = dataset_models(cfg.dataset)
    named = cfg.dataset in DATASET_MODELS
    on_canvas = named and input_shape[1:] == (get_dataset_spec(cfg.dataset).canvas,) * 2
    digits = named if digits is None else digits
    common: Dict[str, Any] = dict(model=cfg.model, input_shape=input_shape, num_classes=int(num_classes),
                                  loc_lr_mult=cfg.loc_lr_mult, fill=BACKGROUND if digits else 0.0)
    transform = cfg.transform if cfg.model.startswith("stn_") else None
    if cfg.model not in LENET_MODELS:  # IDSIA and the gluoncv backbones (validate refused the LeNet knobs)
        own: Dict[str, Any] = dict(dropout=cfg.dropout) if cfg.model in IDSIA_MODELS else {}
        return Architecture(transform=transform, init_scale=cfg.init_scale or 1.0, supersample=cfg.supersample or 1,
                            target_shape=(cfg.target_size,) * 2 if cfg.target_size else None, **own, **common)
    stn = cfg.model == "stn_lenet"
    size = cfg.target_size or (None if not on_canvas else models.stn_target if stn else models.baseline_target)
    target = (size, size) if size else input_shape[1:]
    if not stn:
        return Architecture(transform=None, target_shape=target, dropout=cfg.dropout, **common)
    defaults = models.stn_defaults(cfg.transform)
    localization = cfg.localization or defaults["localization"]
    prior = cfg.brightness_prior
    if prior is None:  # the dataset's prior belongs to its (saliency) localization net
        prior = defaults["brightness_prior"] if localization == defaults["localization"] else 0.0
    return Architecture(transform=cfg.transform, target_shape=target, dropout=cfg.dropout,
                        loc_pool=cfg.loc_pool or models.loc_pool, supersample=cfg.supersample or models.supersample,
                        localization=localization, init_scale=cfg.init_scale or defaults["init_scale"],
                        brightness_prior=prior, **common)


def _check_model_knobs(cfg: TrainConfig) -> None:
    """Refuse (one line) a flag set for a model that has no such knob, instead of ignoring it: the STN's for a
    model without one, the choices of stn_lenet's localization net for the other STNs."""
    stn = cfg.model.startswith("stn_")
    if not stn:
        knobs = ["init_scale", "supersample", "localization", "loc_pool", "brightness_prior"]
        knobs += [] if cfg.model in LENET_MODELS + IDSIA_MODELS else ["target_size"]  # theirs: the input size
        for name in knobs:
            if getattr(cfg, name) is not None:
                raise ConfigError(name, f"{getattr(cfg, name)!r}: {cfg.model} has no STN (use --model stn_{cfg.model})")
    elif cfg.model != "stn_lenet":
        for name in ("localization", "loc_pool", "brightness_prior"):
            if getattr(cfg, name) is not None:
                raise ConfigError(name, f"{getattr(cfg, name)!r}: a choice of stn_lenet's STN only, not of "
                                        f"{cfg.model}'s")


def build_net(cfg: TrainConfig, input_shape: Sequence[int], num_classes: int = 10,
              digits: Optional[bool] = None) -> mx.gluon.HybridBlock:
    """The network ``cfg`` trains (uninitialised): :func:`resolve_architecture` then :func:`build_architecture`."""
    return build_architecture(resolve_architecture(cfg, input_shape, num_classes, digits))
