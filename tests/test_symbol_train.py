"""The Module trainer (stn-gluon train-symbol) and Module checkpoints as first-class models."""
import json

import mxnet as mx
import numpy as np
import pytest

from stn_gluon.cli import main
from stn_gluon.data.mnist import ArrayBatches, normalize
from stn_gluon._runtime.errors import CheckpointError, StnGluonError
from stn_gluon.export.saved import load_model
from stn_gluon.symbol import get_symbol
from stn_gluon.train.module import fit_module
from stn_gluon.train.gluon import TrainConfig, evaluate, fit


def _cfg(path, **kw):
    base = dict(epochs=2, save_dir=str(path), progress=False)
    base.update(kw)
    return TrainConfig(**base)


class _Interrupt(Exception):
    pass


def _test_accuracy_of(model, data):
    batches = ArrayBatches(normalize(data.test_images), data.test_labels, 128)
    return evaluate(model.net, batches, [mx.cpu()])


def test_module_run_writes_checkpoints_metrics_and_plots(tmp_path, small_data):
    lines = []
    metrics = fit_module(_cfg(tmp_path / "m"), dataset=small_data, echo=lines.append)
    run = tmp_path / "m"
    for name in ("model-symbol.json", "model-0001.params", "model-0002.params", "model-0002.optimizer",
                 "model-0002.optimizer.json", "model.json", "metrics.json", "history.csv", "curves.png", "stn_grid.png"):
        assert (run / name).stat().st_size > 0, name
    assert metrics["trainer"] == "module" and metrics["epochs"] == 2
    assert sum(l.startswith("Test set: ") for l in lines) == 2
    history = [r.split(",") for r in open(run / "history.csv").read().split()[1:]]
    assert float(history[1][2]) < float(history[0][2])  # training loss went down
    # the latest Module checkpoint is the model the tools load, and it scores what was recorded
    model = load_model(str(run))
    assert model.epoch == 2 and model.stn is not None
    loss, correct, total = _test_accuracy_of(model, small_data)
    assert correct == metrics["test_correct"] and total == metrics["test_total"]
    assert abs(loss - metrics["test_loss"]) < 1e-3


@pytest.mark.slow
def test_module_resume_after_interruption(tmp_path, small_data):
    straight = fit_module(_cfg(tmp_path / "a", epochs=3), dataset=small_data, echo=lambda s: None)

    def die_in_epoch_3(line):
        if line.startswith("Epoch 3/3"):
            raise _Interrupt(line)

    with pytest.raises(_Interrupt):
        fit_module(_cfg(tmp_path / "b", epochs=3), dataset=small_data, echo=die_in_epoch_3)
    assert not (tmp_path / "b" / "model-0003.params").exists()
    lines = []
    resumed = fit_module(_cfg(tmp_path / "b", epochs=3, resume="auto"), dataset=small_data, echo=lines.append)
    assert "after epoch 2" in lines[0]
    assert resumed["epochs"] == 3 and sum(l.startswith("Test set:") for l in lines) == 1
    a = mx.nd.load(str(tmp_path / "a" / "model-0003.params"))
    b = mx.nd.load(str(tmp_path / "b" / "model-0003.params"))
    for k in a:
        np.testing.assert_allclose(a[k].asnumpy(), b[k].asnumpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    assert resumed["test_correct"] == straight["test_correct"]


@pytest.mark.slow
def test_gluon_trained_weights_load_into_the_module(tmp_path, small_data):
    metrics = fit(_cfg(tmp_path / "g", epochs=1), dataset=small_data, echo=lambda s: None)
    params = mx.nd.load(str(tmp_path / "g" / "model-0000.params"))
    arg = {k[4:]: v for k, v in params.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in params.items() if k.startswith("aux:")}
    mod = mx.mod.Module(get_symbol())
    test = mx.io.NDArrayIter(normalize(small_data.test_images), small_data.test_labels.astype(np.float32), 128)
    mod.bind(test.provide_data, test.provide_label, for_training=False)
    mod.set_params(arg, aux, allow_missing=False, allow_extra=False)
    acc = dict(mod.score(test, "acc"))["accuracy"]
    assert round(acc * metrics["test_total"]) == metrics["test_correct"]


@pytest.mark.slow
def test_module_checkpoint_works_with_evaluate_and_visualize(tmp_path, mnist_dir, capsys):
    save = tmp_path / "mod"
    assert main(["train-symbol", "--epochs", "1", "--data-dir", str(mnist_dir), "--save-dir", str(save),
                 "--no-progress"]) == 0
    capsys.readouterr()
    metrics = json.load(open(save / "metrics.json"))
    assert main(["evaluate", "--model", str(save / "model"), "--data-dir", str(mnist_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_correct"] == metrics["test_correct"] and result["epoch"] == 1
    assert main(["visualize", "--model", str(save), "--data-dir", str(mnist_dir),
                 "--out", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_module_on_two_cpu_contexts(tmp_path, small_data):
    metrics = fit_module(_cfg(tmp_path / "mc", epochs=1, ctx="cpu:0,1"), dataset=small_data, echo=lambda s: None)
    assert metrics["context"] == "cpu:0,1" and metrics["test_total"] == len(small_data.test_labels)


def test_module_errors(tmp_path, small_data):
    # a checkpoint of another network
    fit_module(_cfg(tmp_path / "base", epochs=1, model="lenet"), dataset=small_data, echo=lambda s: None)
    with pytest.raises(CheckpointError, match="different recipe .model 'lenet' -> 'stn_lenet'"):
        fit_module(_cfg(tmp_path / "x", epochs=1, resume=str(tmp_path / "base")), dataset=small_data)
    (tmp_path / "base" / "train_state.json").unlink()  # a bare Module checkpoint from elsewhere
    with pytest.raises(CheckpointError, match="another network"):
        fit_module(_cfg(tmp_path / "x", epochs=1, resume=str(tmp_path / "base")), dataset=small_data)
    # a missing checkpoint named explicitly
    with pytest.raises(CheckpointError, match="no exported model"):
        fit_module(_cfg(tmp_path / "x", epochs=1, resume=str(tmp_path / "nothing")), dataset=small_data)
    # a damaged one
    params = tmp_path / "base" / "model-0001.params"
    params.write_bytes(params.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged"):
        fit_module(_cfg(tmp_path / "base", epochs=1, model="lenet", resume="auto"), dataset=small_data)
    # a symbol whose input shape does not fit the data
    with pytest.raises(StnGluonError, match="does not accept input"):
        fit_module(_cfg(tmp_path / "y", epochs=1), dataset=small_data, symbol=get_symbol(target_shape=(8, 8)))
    with pytest.raises(StnGluonError, match="cannot build this network .transform .attention."):
        fit_module(_cfg(tmp_path / "z", transform="attention"), dataset=small_data)


@pytest.mark.slow
def test_exported_model_with_the_wrong_input_shape_is_refused(tmp_path, small_data):
    fit(_cfg(tmp_path / "g", epochs=1), dataset=small_data, echo=lambda s: None)
    meta = json.load(open(tmp_path / "g" / "model.json"))
    meta["input_shape"] = [1, 12, 12]
    json.dump(meta, open(tmp_path / "g" / "model.json", "w"))
    with pytest.raises(CheckpointError, match=r"does not accept input \(1, 12, 12\)"):
        load_model(str(tmp_path / "g"))


@pytest.mark.slow
def test_resuming_a_complete_bare_checkpoint_reports_its_accuracy(tmp_path, small_data):
    first = fit_module(_cfg(tmp_path / "m", epochs=1), dataset=small_data, echo=lambda s: None)
    (tmp_path / "m" / "train_state.json").unlink()  # as if the checkpoint came from elsewhere
    again = fit_module(_cfg(tmp_path / "m", epochs=1, resume="auto"), dataset=small_data, echo=lambda s: None)
    assert again["test_correct"] == first["test_correct"] and again["epochs"] == 0


def test_fit_module_refuses_fractional_epochs(tmp_path, small_data):
    with pytest.raises(StnGluonError, match="whole epochs"):
        fit_module(_cfg(tmp_path, epochs=1.5), dataset=small_data)
