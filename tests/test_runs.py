"""Run folders are never silently replaced; derived files are tied to the weights they came from."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

import mxnet as mx
import numpy as np
import pytest

from conftest import write_mnist_dir
from stn_gluon.data.mnist import DigitDataset, load_embedded_sample
from stn_gluon._runtime.errors import CheckpointError, StnGluonError
from stn_gluon.export.saved import load_model, write_model_meta
from stn_gluon._runtime.files import sha256_file
from stn_gluon.train.runs import (RunExistsError, check_save_dir, clear_run, describe_run, drop_stale_derived,
                            inspect_run, plan_demo)
from stn_gluon.train.gluon import TrainConfig, fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(sample):
    return DigitDataset(sample.train_images[:256], sample.train_labels[:256], sample.test_images[:64],
                        sample.test_labels[:64], source="tiny test subset")


def _recipe(**kw):
    return TrainConfig(**dict(dict(epochs=1, progress=False), **kw))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, sample):
    """A finished 1-epoch run (trained once per module; tests copy it)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    fit(_recipe(save_dir=str(folder)), dataset=_tiny(sample), echo=lambda s: None)
    return folder


@pytest.fixture
def run(tmp_path, finished_run):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    return folder


@pytest.fixture
def tiny_mnist(tmp_path, sample):
    return write_mnist_dir(tmp_path / "mnist", sample, 256, 64)


def _snapshot(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


@pytest.fixture
def cli(tmp_path, cli_processes):
    """``python -m stn_gluon ARGS`` in ``tmp_path``, without STN_GLUON_DATA and with MXNET_HOME there."""
    env = dict(os.environ)
    env.pop("STN_GLUON_DATA", None)
    env["MXNET_HOME"] = str(tmp_path / "mxnet_home")
    return lambda *args: cli_processes.run(list(args), cwd=tmp_path, env=env, timeout=600)


def _one_error_line(out):
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.mark.parametrize("command", ["train", "train-symbol"])
@pytest.mark.slow
def test_training_into_a_finished_run_is_refused_and_leaves_it_untouched(cli, run, command):
    (run / "notes.txt").write_text("mine")
    before = _snapshot(run)
    line = _one_error_line(cli(command, "--epochs", "1", "--save-dir", "run"))
    assert "run already holds a finished run (1/1 epochs, test accuracy " in line
    assert "--resume" in line and "--overwrite" in line and "another --save-dir" in line
    assert _snapshot(run) == before


@pytest.mark.slow
def test_what_a_partial_run_is_described_as(tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    with zipfile.ZipFile(folder / "checkpoint.zip", "w") as zf:
        zf.writestr("meta.json", json.dumps(dict(epoch=2, recipe=dict(epochs=6), history=[dict(test_acc=0.9)])))
    info = inspect_run(str(folder))
    assert not info.finished and (info.epochs_done, info.epochs_total) == (2, 6)
    assert describe_run(info) == "a partial run (2 of 6 epochs done, test accuracy 90.00 %)"
    with pytest.raises(RunExistsError, match=r"partial run \(2 of 6 epochs done"):
        check_save_dir(_recipe(save_dir=str(folder)))
    # a finished fractional run says how many epochs it was, not "2/1.25"
    short = tmp_path / "short"
    short.mkdir()
    (short / "metrics.json").write_text(json.dumps(dict(epochs=2, test_accuracy=0.99, config=dict(epochs=1.25))))
    assert describe_run(inspect_run(str(short))) == "a finished run (1.25 epochs, test accuracy 99.00 %)"
    # other files alone are no run: training there is fine, and they stay
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert inspect_run(str(other)) is None and check_save_dir(_recipe(save_dir=str(other))) is None
    with pytest.raises(StnGluonError, match="is a file, not a folder"):
        fit(_recipe(save_dir=str(other / "notes.txt")), dataset=_tiny(load_embedded_sample()))
    with pytest.raises(StnGluonError, match="give one of them"):
        check_save_dir(_recipe(save_dir=str(other), overwrite=True, resume="auto"))


def test_overwrite_replaces_the_run_and_keeps_the_users_files(tmp_path, run, sample):
    (run / "notes.txt").write_text("mine")
    (run / "model.onnx").write_bytes(b"an export of the old weights")
    (run / ".metrics.json.k2j4h1.tmp").write_text("left by a killed run")
    old_params = (run / "model-0000.params").read_bytes()
    metrics = fit(_recipe(save_dir=str(run), lr=0.05, overwrite=True), dataset=_tiny(sample), echo=lambda s: None)
    assert metrics["config"]["lr"] == 0.05
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "model.onnx").exists() and not (run / ".metrics.json.k2j4h1.tmp").exists()
    assert (run / "model-0000.params").read_bytes() != old_params
    assert json.load(open(run / "model.json"))["sha256"]["model-0000.params"] == sha256_file(run / "model-0000.params")
    assert clear_run(str(run)) and sorted(os.listdir(run)) == ["notes.txt"]


def test_resume_with_nothing_to_resume_does_not_train_over_the_run(run, sample):
    (run / "checkpoint.zip").unlink()
    before = _snapshot(run)
    with pytest.raises(RunExistsError, match="but no checkpoint.zip to continue"):
        fit(_recipe(save_dir=str(run), resume="auto"), dataset=_tiny(sample), echo=lambda s: None)
    assert _snapshot(run) == before


@pytest.mark.slow
def test_resume_given_the_exported_model_says_what_it_is(cli, tmp_path, run, tiny_mnist):
    before = _snapshot(run)
    line = _one_error_line(cli("train", "--epochs", "1", "--data-dir", str(tiny_mnist),
                                "--save-dir", "run", "--resume", "run/model-0000.params"))
    assert "run/model-0000.params is the exported model's weights, not a checkpoint" in line
    assert "--resume expects the run folder or its checkpoint.zip" in line
    assert "delete" not in line and "damaged" not in line
    assert _snapshot(run) == before


def _flip_conv_weight_bits(params_file):
    arrays = mx.nd.load(str(params_file))
    name = next(k for k in arrays if "conv" in k and k.endswith("weight"))
    raw = bytearray(params_file.read_bytes())
    at = raw.find(arrays[name].asnumpy().tobytes())
    assert at > 0
    for i in range(0, 64, 4):  # a few bits in the exponent of some weights
        raw[at + i + 3] ^= 0x10
    params_file.write_bytes(bytes(raw))
    assert mx.nd.load(str(params_file))[name].shape == arrays[name].shape  # still a loadable file


@pytest.mark.slow
def test_flipped_bits_in_the_weights_are_refused_by_every_loader(cli, tmp_path, run, tiny_mnist):
    meta = json.load(open(run / "model.json"))
    assert meta["sha256"] == {"model-symbol.json": sha256_file(run / "model-symbol.json"),
                              "model-0000.params": sha256_file(run / "model-0000.params")}
    load_model(str(run))  # intact: loads
    _flip_conv_weight_bits(run / "model-0000.params")
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match=r"model-0000\.params: its SHA-256 does not match .*model\.json"):
        load_model(str(run))
    np.save(tmp_path / "digit.npy", np.zeros((28, 28), np.uint8))
    for args in (["evaluate", "--model", "run", "--data-dir", str(tiny_mnist)],
                 ["predict", "--model", "run", "digit.npy"],
                 ["export-onnx", "--model", "run"]):
        line = _one_error_line(cli(*args))
        assert "model-0000.params: its SHA-256 does not match" in line, args
    assert _snapshot(run) == before
    # a model.json from before checksums were recorded loads without the check
    del meta["sha256"]
    (run / "model.json").write_text(json.dumps(meta))
    load_model(str(run))


def test_a_changed_graph_file_is_refused(run):
    graph = json.load(open(run / "model-symbol.json"))
    graph["attrs"] = dict(graph.get("attrs", {}), note="edited")
    (run / "model-symbol.json").write_text(json.dumps(graph))
    with pytest.raises(CheckpointError, match=r"model-symbol\.json: its SHA-256 does not match"):
        load_model(str(run))


def test_a_save_dirs_onnx_export_of_older_weights_is_refused(cli, tmp_path, run):
    from stn_gluon.serve.predictors import load_predictor
    from stn_gluon.export.saved import onnx_weights_mismatch
    from stn_gluon.export.onnx import export_onnx, read_metadata
    import onnx

    export_onnx(str(run), str(run / "model.onnx"))
    meta = read_metadata(onnx.load(str(run / "model.onnx")))
    assert meta["params_file"] == "model-0000.params"
    assert meta["params_sha256"] == sha256_file(run / "model-0000.params")
    assert load_predictor(str(run), "onnxruntime").backend == "onnxruntime"
    shutil.copyfile(run / "model.onnx", run / "model-int8.onnx")  # an int8 copy records the same source weights
    # retrained: new weights and model.json, the old model.onnx (and its int8 copy) left beside them
    arrays = mx.nd.load(str(run / "model-0000.params"))
    mx.nd.save(str(run / "model-0000.params"), {k: v * 1.01 for k, v in arrays.items()})
    write_model_meta(str(run / "model"), 0, {k: v for k, v in json.load(open(run / "model.json")).items()
                                             if k != "sha256"})
    load_model(str(run))  # the MXNet export itself is consistent
    for where in (str(run), str(run / "model.onnx")):
        with pytest.raises(CheckpointError, match=r"model\.onnx is out of date .*re-run stn-gluon export-onnx"):
            load_predictor(where, "onnxruntime")
    (tmp_path / "d.npy").write_bytes(b"")
    line = _one_error_line(cli("predict", "--model", "run", "--backend", "onnxruntime", "d.npy"))
    assert "model.onnx is out of date" in line
    assert onnx_weights_mismatch(str(run / "model.onnx"), str(run))
    assert drop_stale_derived(str(run)) == [str(run / "model.onnx"), str(run / "model-int8.onnx")]
    assert not (run / "model.onnx").exists() and not (run / "model-int8.onnx").exists()


@pytest.mark.slow
def test_demo_run_twice_keeps_the_first(tmp_path, finished_run):
    demo = tmp_path / "runs" / "demo"
    shutil.copytree(finished_run, demo)
    os.chdir(tmp_path)
    try:
        same = plan_demo(_recipe(), "runs/demo")
        assert same.done and same.save_dir == "runs/demo"
        assert "already holds this demo, a finished run (1/1 epochs" in same.message
        other = plan_demo(_recipe(epochs=5), "runs/demo")
        assert not other.done and not other.resume and other.save_dir == "runs/demo-2"
        (demo / "metrics.json").rename(tmp_path / "metrics.json")  # as if interrupted after epoch 1
        assert plan_demo(_recipe(), "runs/demo").resume
        (tmp_path / "metrics.json").rename(demo / "metrics.json")
    finally:
        os.chdir(ROOT)
    before = _snapshot(demo)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--epochs", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "runs/demo already holds this demo" in out.stdout and "leaving it as it is" in out.stdout
    assert _snapshot(demo) == before and sorted(os.listdir(tmp_path / "runs")) == ["demo"]


def _aside(folder):
    found = [p for p in folder.iterdir() if p.name.startswith(".overwritten-")]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.mark.slow
def test_overwrite_ctrl_c_in_the_first_epoch_keeps_the_old_run_and_says_where(tmp_path, run, sample):
    """Black-box: `train --overwrite` interrupted (SIGINT) before its first checkpoint."""
    import signal

    (run / "notes.txt").write_text("mine")
    old = {k: v for k, v in _snapshot(run).items() if k != "notes.txt"}
    data = write_mnist_dir(tmp_path / "mnist", sample, 4000, 64)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("STN_GLUON_DATA", None)
    proc = subprocess.Popen([sys.executable, "-m", "stn_gluon", "train", "--overwrite", "--save-dir", str(run),
                             "--data-dir", str(data), "--batch-size", "1", "--epochs", "1", "--no-progress"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a job started in the background (`make test &`, `cmd &` in a
                            # script) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stderr:  # the old run is set aside just before the network is initialised
        lines.append(line)
        if "moved the previous run" in line:
            break
    assert any("moved the previous run" in l for l in lines), "".join(lines)
    time.sleep(1.0)  # into the first epoch (4,000 steps of one image: several seconds)
    for _ in range(10):  # as a user presses Ctrl-C again: MXNet swallows a SIGINT that lands in one of its
        proc.send_signal(signal.SIGINT)  # ctypes callbacks ("Exception ignored on calling ctypes callback")
        try:  # time to end (a press during the clean-up would kill it: status -2, not 130)
            proc.wait(timeout=3.0)
            break
        except subprocess.TimeoutExpired:
            continue
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    err = "".join(lines) + rest
    # what MXNet's ctypes layer prints when a press lands inside it (a callback, or an NDArray freed meanwhile)
    ours = re.sub(r"Exception ignored (on calling ctypes callback|in: <function NDArrayBase\.__del__).*?\n"
                  r"KeyboardInterrupt: *\n", "", err, flags=re.S)
    assert "Traceback" not in ours, err
    aside = _aside(run)
    assert aside is not None and not (run / "checkpoint.zip").exists(), err
    kept = [l for l in err.splitlines() if "was kept in" in l]
    assert len(kept) == 1 and str(aside) in kept[0] and "a finished run" in kept[0], err
    assert "interrupted; no epoch had finished: nothing was checkpointed" in err and "--resume" not in err, err
    assert _snapshot(aside) == old  # every file of the old run, byte for byte
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("trainer", ["gluon", "module"])
def test_overwrite_failing_before_its_first_checkpoint_keeps_the_old_run(run, sample, monkeypatch, caplog, trainer):
    from stn_gluon.train import gluon as gluon_trainer, module as module_trainer

    old = _snapshot(run)

    def crash(*args, **kwargs):
        raise RuntimeError("crashed in the first epoch")

    if trainer == "gluon":
        monkeypatch.setattr(gluon_trainer, "_train_epoch", crash)
        train = fit
    else:
        monkeypatch.setattr(module_trainer, "_train", crash)
        train = module_trainer.fit_module
    with pytest.raises(RuntimeError, match="crashed"):
        train(_recipe(save_dir=str(run), overwrite=True), dataset=_tiny(sample), echo=lambda s: None)
    aside = _aside(run)
    assert aside is not None and _snapshot(aside) == old
    assert inspect_run(str(run)) is None  # nothing of the old run left in the save dir itself
    kept = [r.getMessage() for r in caplog.records if "was kept in" in r.getMessage()]
    assert len(kept) == 1 and str(aside) in kept[0] and "\n" not in kept[0]


@pytest.mark.parametrize("trainer", ["gluon", "module"])
def test_overwrite_deletes_the_old_run_once_the_first_checkpoint_is_written(run, sample, monkeypatch, trainer):
    from stn_gluon.train import module as module_trainer
    from stn_gluon.train.runs import SetAside

    seen = []
    discard = SetAside.discard

    def spy(self):  # the moment the old run goes: the new checkpoint is already there
        if self.folder is not None:
            seen.append((os.path.isdir(self.folder), sorted(os.listdir(run))))
        discard(self)

    monkeypatch.setattr(SetAside, "discard", spy)
    train = fit if trainer == "gluon" else module_trainer.fit_module
    train(_recipe(save_dir=str(run), epochs=2, overwrite=True), dataset=_tiny(sample), echo=lambda s: None)
    assert len(seen) == 1 and seen[0][0]
    assert ("checkpoint.zip" if trainer == "gluon" else "model-0001.params") in seen[0][1]
    assert "metrics.json" not in seen[0][1]  # after epoch 1 of 2
    assert _aside(run) is None


def test_the_ctrl_c_hint_offers_resume_only_when_a_checkpoint_exists(tmp_path):
    from stn_gluon.cli import _resume_hint, build_parser

    run = tmp_path / "run"
    args = build_parser().parse_args(["train", "--save-dir", str(run)])
    assert _resume_hint(args) == "; no epoch had finished: nothing was checkpointed"
    run.mkdir()
    (run / "checkpoint.zip").write_bytes(b"")
    assert _resume_hint(args) == f"; the last finished epoch is checkpointed (continue with --resume {run})"
    assert _resume_hint(build_parser().parse_args(["models"])) == ""


def test_an_onnx_export_records_the_hash_of_the_weights_it_read_not_of_the_file_later(run, monkeypatch):
    """Hash what you load: weights replaced on disk while the export runs do not get their hash recorded."""
    import hashlib

    import onnx

    from stn_gluon.export import saved
    from stn_gluon.export.onnx import export_onnx, read_metadata

    read = saved.read_model_file
    loaded = {}

    def read_then_replace(path):
        data = loaded[os.path.basename(path)] = read(path)
        if path.endswith(".params"):
            with open(path, "ab") as f:
                f.write(b"changed after it was read")
        return data

    monkeypatch.setattr(saved, "read_model_file", read_then_replace)
    export_onnx(str(run), str(run / "model.onnx"))
    meta = read_metadata(onnx.load(str(run / "model.onnx")))
    assert meta["params_sha256"] == hashlib.sha256(loaded["model-0000.params"]).hexdigest()
    assert meta["params_sha256"] != sha256_file(run / "model-0000.params")
    assert meta["source"] == {n: hashlib.sha256(b).hexdigest() for n, b in loaded.items()}
