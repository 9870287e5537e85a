"""The recipe module: one place that says what a run is, and what both trainers build from it."""
import dataclasses
import os

import mxnet as mx
import numpy as np
import pytest

import stn_gluon as sg
from stn_gluon.nn.architecture import build_architecture, initialize_net
from stn_gluon.train.recipes import resolve_architecture
from stn_gluon.cli import build_parser, main, train_config_from_args
from stn_gluon.data.mnist import BACKGROUND, DigitDataset
from stn_gluon.data.distortions import DATASETS
from stn_gluon._runtime.errors import ConfigError, StnGluonError
from stn_gluon.train.recipes import DATASET_MODELS, RECIPES, RUN_FIELDS, TrainConfig
from stn_gluon.symbol import get_symbol, get_symbol_for, localization_params, unsupported_fields
from stn_gluon.train.module import fit_module


def test_every_dataset_has_model_defaults():
    assert set(DATASET_MODELS) == set(DATASETS)


def test_named_recipes_and_overrides():
    fast = TrainConfig.from_recipe("fast")
    assert fast.recipe == "fast"
    for name, value in RECIPES["fast"].items():
        assert getattr(fast, name) == value
    assert TrainConfig.from_recipe("fast", epochs=7).epochs == 7
    assert TrainConfig.from_recipe("default") == TrainConfig()
    with pytest.raises(ConfigError, match="recipe 'quick': choose default, fast"):
        TrainConfig.from_recipe("quick")
    # a recipe is everything but how to run it
    assert not set(TrainConfig().recipe_fields()) & set(RUN_FIELDS)
    assert TrainConfig(ctx="cpu:0,1", save_dir="x").recipe_differences(TrainConfig().recipe_fields()) == []


@pytest.mark.parametrize("field, value, library, flag", [
    ("epochs", 0, "epochs must be > 0, got 0", "--epochs must be > 0, got 0"),
    ("lr", float("nan"), "lr must be a finite number", "--lr must be a finite number"),
    ("optimizer", "rmsprop", "optimizer 'rmsprop': choose sgd, nag, adam", "--optimizer 'rmsprop'"),
    ("dropout", 1.0, "dropout must be <= 0.99", "--dropout must be <= 0.99"),
    ("transform", "tps1", "transform 'tps1': choose one of affine", "--transform 'tps1': choose one of affine"),
    ("lr_step_epochs", "a,b", "lr_step_epochs 'a,b': expected integers", "--lr-step-epochs 'a,b'"),
])
def test_library_errors_name_parameters_and_the_cli_names_flags(field, value, library, flag):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value}).validate()
    assert str(err.value).startswith(library) and "--" not in str(err.value)
    assert err.value.for_cli().startswith(flag)


def test_cli_flags_are_generated_from_the_config(capsys):
    parser = build_parser()
    args = parser.parse_args(["train", "--recipe", "fast", "--epochs", "3", "--no-augment", "--seed", "7"])
    cfg = train_config_from_args(args)
    assert (cfg.recipe, cfg.epochs, cfg.augment, cfg.seed) == ("fast", 3, False, 7)
    assert cfg.batch_size == RECIPES["fast"]["batch_size"]  # from the recipe, not the default
    cfg = train_config_from_args(parser.parse_args(["train-symbol", "--no-stn"]))
    assert (cfg.model, cfg.save_dir) == ("lenet", os.path.join("runs", "lenet_module"))
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):  # every flag, and the default of every flag that has one
        flag = f.metadata.get("negative_flag") or "--" + f.name.replace("_", "-")
        if not f.metadata.get("cli", True):  # set by the trainer (workers: from the kvstore), no flag
            assert flag not in out, flag
            continue
        assert flag in out, flag
        if f.default is not None and not isinstance(f.default, bool):
            assert f"default: {f.default}" in " ".join(out.split()), f.name
    assert f"fast: {RECIPES['fast']['epochs']}" in out


def test_cli_prints_the_flag_for_a_library_error(tmp_path, capsys):
    code = main(["train", "--lr-mode", "step", "--lr-step-epochs", "x", "--save-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --lr-step-epochs 'x'") and not (tmp_path / "r").exists()


def test_zoo_names_give_the_trained_models():
    trained = sg.get_model("stn_lenet").config
    built = build_architecture(resolve_architecture(TrainConfig(), (1, 28, 28))).config
    assert trained == built
    assert (trained["dropout"], trained["fill"]) == (TrainConfig.dropout, pytest.approx(BACKGROUND))
    assert sg.get_model("stn_lenet").stn.loc_lr_mult == TrainConfig.loc_lr_mult
    tutorial = sg.get_model("stn_lenet_tutorial")
    assert (tutorial.config["dropout"], tutorial.config["fill"], tutorial.stn.loc_lr_mult) == (0.5, 0.0, 1.0)
    assert sg.get_model("lenet").config["stn"] is False
    assert sg.get_model("stn_lenet", transform="tps", dropout=0.1).config["dropout"] == 0.1
    assert "stn_lenet_tutorial" in sg.list_models()


def test_get_symbol_defaults_are_the_default_recipe():
    sym = get_symbol()
    attrs = sym.attr_dict()
    assert {attrs[n]["__lr_mult__"] for n in localization_params(sym)} == {str(TrainConfig.loc_lr_mult)}
    dropouts = {v["p"] for k, v in attrs.items() if k.endswith("dropout0_fwd") or k.endswith("dropout1_fwd")}
    assert dropouts == {str(TrainConfig.dropout)}
    assert any(k.endswith("stn_sampler") for k in attrs)  # the background fill is on


def _same_network(arch, rng):
    """The Gluon net and the symbol of ``arch``: same parameter names and shapes, same outputs."""
    net = build_architecture(arch)
    initialize_net(net, [mx.cpu()])
    x = mx.nd.array(rng.normal(0, 1, (3,) + arch.input_shape).astype(np.float32))
    net(x)
    params = {k: v.data() for k, v in net.collect_params().items()}
    for p in params.values():  # far from the identity: random regressor weights too
        p[:] = mx.nd.array(rng.normal(0, 0.05, p.shape))
    sym = get_symbol_for(arch)
    args = set(sym.list_arguments()) - {"data", "softmax_label"}
    assert args == set(params)
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=x.shape)[0]))
    assert all(tuple(shapes[k]) == v.shape for k, v in params.items())
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"])
    mod.bind(data_shapes=[("data", x.shape)], label_shapes=[("softmax_label", (3,))], for_training=False)
    mod.set_params(params, {})
    mod.forward(mx.io.DataBatch([x]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), mx.nd.softmax(net(x)).asnumpy(), atol=2e-5)


@pytest.mark.parametrize("dataset", sorted(DATASET_MODELS))
@pytest.mark.parametrize("model, transform", [("stn_lenet", "affine"), ("stn_lenet", "attention"), ("lenet", "affine")])
def test_train_and_train_symbol_build_the_same_network_or_refuse(dataset, model, transform, tmp_path):
    canvas = DATASETS[dataset].canvas
    cfg = TrainConfig(model=model, transform=transform, dataset=dataset, epochs=1, batch_size=8,
                      save_dir=str(tmp_path / "run"), progress=False)
    arch = resolve_architecture(cfg, (1, canvas, canvas))
    missing = unsupported_fields(arch)
    if not missing:
        _same_network(arch, np.random.RandomState(0))
        return
    rng = np.random.RandomState(1)
    images = rng.randint(0, 255, (16, canvas, canvas)).astype(np.uint8)
    data = DigitDataset(images, np.arange(16) % 10, images[:8], np.arange(8) % 10, source="random")
    with pytest.raises(StnGluonError, match="the Module path cannot build this network") as err:
        fit_module(cfg, dataset=data, echo=lambda s: None)
    assert all(m in str(err.value) for m in missing)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_the_module_path_refuses_what_it_cannot_express():
    arch = resolve_architecture(TrainConfig(dataset="noisy128", transform="attention"), (1, 128, 128))
    assert set(m.split()[0] for m in unsupported_fields(arch)) >= {"transform", "localization", "supersample"}
    plain = resolve_architecture(TrainConfig(), (1, 28, 28))
    assert unsupported_fields(plain) == []
    assert unsupported_fields(dataclasses.replace(plain, transform="tps")) == ["transform 'tps'"]


def test_for_cli_spells_parameters_as_flags_but_leaves_paths_alone():
    err = StnGluonError("save_dir runs/save_dir/x holds a run; continue it with resume, or choose another save_dir.",
                        params=("save_dir", "resume"))
    assert err.for_cli() == ("--save-dir runs/save_dir/x holds a run; continue it with --resume, or choose another "
                             "--save-dir.")
    assert StnGluonError("data_dir: ./data_dir/ is empty", params=("data_dir",)).for_cli() == \
        "--data-dir: ./data_dir/ is empty"
