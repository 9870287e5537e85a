"""Checkpoints hold arrays and JSON only: optimizer state restored without pickle, pickles never opened."""
import dataclasses
import json
import os
import pickle
import shutil
import zipfile

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from stn_gluon._runtime.errors import CheckpointError
from stn_gluon._runtime.files import load_checkpoint, save_checkpoint
from stn_gluon.train.optstate import restore_updater_state, trainer_updaters, updater_state
from stn_gluon.train.gluon import TrainConfig, fit, make_trainer


def _net(ctx_list, prefix="t_"):
    net = gluon.nn.HybridSequential(prefix=prefix)  # fixed names, as the trainers' nets have
    with net.name_scope():
        net.add(gluon.nn.Dense(8, activation="relu", in_units=5, prefix="d0_"),
                gluon.nn.Dense(3, in_units=8, prefix="d1_"))
    net.initialize(mx.init.Xavier(), ctx=ctx_list)
    return net


def _steps(net, trainer, ctx_list, rng, count):
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(count):
        x = mx.nd.array(rng.normal(size=(8, 5)))
        y = mx.nd.array(rng.randint(0, 3, size=8))
        xs = gluon.utils.split_and_load(x, ctx_list)
        ys = gluon.utils.split_and_load(y, ctx_list)
        with autograd.record():
            losses = [loss_fn(net(a), b) for a, b in zip(xs, ys)]
        autograd.backward(losses)
        trainer.step(8)


def _weights(net):
    return {k: v.data(v.list_ctx()[0]).asnumpy() for k, v in net.collect_params().items()}


def _trainer(net, optimizer, ctx_list):
    params = dict(learning_rate=0.05, wd=1e-3)
    if optimizer != "adam":
        params["momentum"] = 0.9
    return make_trainer(net.collect_params(), optimizer, params, len(ctx_list))


@pytest.mark.parametrize("ctx_count", [1, 2])
@pytest.mark.parametrize("optimizer", ["sgd", "nag", "adam"])
def test_restored_optimizer_state_continues_exactly_as_the_uninterrupted_run(tmp_path, optimizer, ctx_count):
    ctx_list = [mx.cpu(i) for i in range(ctx_count)]
    mx.random.seed(1)
    straight = _net(ctx_list)
    start = _weights(straight)
    trainer = _trainer(straight, optimizer, ctx_list)
    _steps(straight, trainer, ctx_list, np.random.RandomState(0), 3)
    arrays, info = updater_state(trainer_updaters(trainer))
    mx.nd.save(str(tmp_path / "opt.params"), arrays)  # through the file format, as a checkpoint does
    (tmp_path / "opt.json").write_text(json.dumps(info))
    after3 = _weights(straight)
    _steps(straight, trainer, ctx_list, np.random.RandomState(1), 4)

    resumed = _net(ctx_list)
    for name, param in resumed.collect_params().items():
        param.set_data(mx.nd.array(after3[name]))
    trainer2 = _trainer(resumed, optimizer, ctx_list)
    restore_updater_state(trainer_updaters(trainer2), mx.nd.load(str(tmp_path / "opt.params")),
                          json.loads((tmp_path / "opt.json").read_text()))
    assert trainer2.optimizer.num_update == trainer.optimizer.num_update - 4
    _steps(resumed, trainer2, ctx_list, np.random.RandomState(1), 4)
    a, b = _weights(straight), _weights(resumed)
    moved = max(np.abs(a[k] - start[k]).max() for k in a)
    assert moved > 1e-3  # the steps did something
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    if info["states"] and optimizer != "adam":
        assert any(e["layout"] is not None for e in info["states"])  # momentum was saved, not dropped


def test_optimizer_state_of_another_optimizer_or_other_parameters_is_refused():
    ctx = [mx.cpu()]
    net = _net(ctx)
    trainer = _trainer(net, "adam", ctx)
    _steps(net, trainer, ctx, np.random.RandomState(0), 1)
    arrays, info = updater_state(trainer_updaters(trainer))
    assert [e["name"] for e in info["states"]] == ["t_d0_bias", "t_d0_weight", "t_d1_bias", "t_d1_weight"]
    other = _trainer(_net(ctx), "sgd", ctx)
    with pytest.raises(CheckpointError, match="holds adam state, this run uses sgd"):
        restore_updater_state(trainer_updaters(other), arrays, info, source="ckpt")
    renamed = _trainer(_net(ctx, prefix="u_"), "adam", ctx)
    with pytest.raises(CheckpointError, match="is for t_d0_bias, here that is u_d0_bias"):
        restore_updater_state(trainer_updaters(renamed), arrays, info, source="ckpt")


class _Payload:
    """Unpickling this creates a folder: the visible side effect of code run by pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _pickle_checkpoint(path, marker, net_params, meta):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", json.dumps(meta))
        zf.write(net_params, "net.params")
        zf.writestr("trainer.states", pickle.dumps(_Payload(str(marker))))


def test_a_checkpoint_carrying_a_pickle_is_refused_and_never_unpickled(tmp_path, small_data):
    marker = tmp_path / "pickle-ran"
    pickle.loads(pickle.dumps(_Payload(str(tmp_path / "proof"))))  # the payload does work when unpickled
    assert (tmp_path / "proof").is_dir()

    net = _net([mx.cpu()])
    net.save_parameters(str(tmp_path / "net.params"))
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(epochs=1, save_dir=str(run), progress=False)
    _pickle_checkpoint(run / "checkpoint.zip", marker, tmp_path / "net.params",
                       dict(epoch=1, format=1, recipe=cfg.recipe_fields(), history=[]))
    before = (run / "checkpoint.zip").read_bytes()
    with pytest.raises(CheckpointError, match=r"pickle, which is never loaded"):
        with load_checkpoint(str(run / "checkpoint.zip")):
            pass
    cfg = dataclasses.replace(cfg, resume="auto")
    with pytest.raises(CheckpointError, match=r"older stn-gluon.*trainer\.states.*pickle"):
        fit(cfg, dataset=small_data, echo=lambda s: None)
    assert not marker.exists()
    assert (run / "checkpoint.zip").read_bytes() == before


def test_checkpoint_members_are_arrays_and_json(tmp_path):
    net = _net([mx.cpu()])
    trainer = _trainer(net, "sgd", [mx.cpu()])
    _steps(net, trainer, [mx.cpu()], np.random.RandomState(0), 2)
    path = tmp_path / "checkpoint.zip"
    save_checkpoint(str(path), dict(epoch=1), net.save_parameters, updater_state(trainer_updaters(trainer)))
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["meta.json", "net.params", "optimizer.json", "optimizer.params"]
        for name in zf.namelist():
            assert not zf.read(name).startswith(b"\x80")  # no pickle protocol header anywhere
    with load_checkpoint(str(path)) as (meta, params, (arrays, info)):
        assert meta["epoch"] == 1 and meta["format"] == 2
        assert info["num_update"] == 2 and all(isinstance(a, mx.nd.NDArray) for a in arrays.values())


def test_module_checkpoint_with_a_pickled_states_file_is_refused_never_unpickled(tmp_path, small_data):
    from stn_gluon.train.module import fit_module

    run = tmp_path / "m"
    fit_module(TrainConfig(epochs=1, save_dir=str(run), progress=False, optimizer="adam"),
               dataset=small_data, echo=lambda s: None)
    names = sorted(os.listdir(run))
    assert "model-0001.optimizer" in names and "model-0001.optimizer.json" in names
    assert not [n for n in names if n.endswith(".states")]
    info = json.loads((run / "model-0001.optimizer.json").read_text())
    assert info["optimizer"] == "adam" and info["num_update"] == len(small_data.train_labels) // 64
    # an older run: its optimizer state is a pickle
    old = tmp_path / "old"
    shutil.copytree(run, old)
    for n in ("model-0001.optimizer", "model-0001.optimizer.json"):
        (old / n).unlink()
    marker = tmp_path / "pickle-ran"
    (old / "model-0001.states").write_bytes(pickle.dumps(_Payload(str(marker))))
    before = {n: (old / n).read_bytes() for n in os.listdir(old)}
    with pytest.raises(CheckpointError, match=r"model-0001\.states is from an older stn-gluon.*never loaded"):
        fit_module(TrainConfig(epochs=1, save_dir=str(old), progress=False, optimizer="adam", resume="auto"),
                   dataset=small_data, echo=lambda s: None)
    assert not marker.exists()
    assert {n: (old / n).read_bytes() for n in os.listdir(old)} == before
