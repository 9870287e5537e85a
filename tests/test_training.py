import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import stn_gluon as sg
from conftest import write_idx
from stn_gluon._runtime.errors import CheckpointError, StnGluonError
from stn_gluon.export.saved import load_model
from stn_gluon.train.gluon import TrainConfig, evaluate, fit, make_lr_scheduler, train_step
from stn_gluon.data.mnist import ArrayBatches, normalize

QUIET = dict(progress=False)


def _cfg(tmp_path, **kw):
    base = dict(epochs=2, batch_size=64, save_dir=str(tmp_path / "run"), **QUIET)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_writes_every_artifact_and_the_export_reloads(tmp_path, small_data):
    lines = []
    metrics = fit(_cfg(tmp_path), dataset=small_data, echo=lines.append)
    run = tmp_path / "run"
    for name in ("model-symbol.json", "model-0000.params", "model.json", "metrics.json",
                 "history.csv", "curves.png", "stn_grid.png", "checkpoint.zip"):
        assert (run / name).stat().st_size > 0, name
    on_disk = json.load(open(run / "metrics.json"))
    for key in ("test_accuracy", "test_loss", "epochs", "train_seconds", "train_images_per_sec",
                "context", "data_source"):
        assert key in on_disk
    assert on_disk["epochs"] == 2 and on_disk["context"] == "cpu:0"
    assert on_disk["data_source"] == "test subset"
    # the thread choice: printed, and recorded (OMP_NUM_THREADS from the environment wins over the start-up choice)
    threads = on_disk["threads"]
    assert threads["omp_num_threads"] == os.environ["OMP_NUM_THREADS"] and threads["threads_now"] >= 1
    assert threads["adaptive"] is (threads["omp_num_threads_from"] == "stn_gluon" and threads["cores"] > 1)
    assert any(l.startswith("CPU threads: ") for l in lines)
    assert metrics["test_accuracy"] > 0.2  # 2 short epochs on 1,024 real digits: above chance (0.1)
    assert any(l.startswith("Test set: Average loss: ") and "/256 (" in l for l in lines)
    history = open(run / "history.csv").read().splitlines()
    assert history[0].startswith("epoch,lr,train_loss") and len(history) == 3
    # the exported model, loaded from its files alone, gives the accuracy that was recorded
    model = load_model(str(run))
    batches = ArrayBatches(normalize(small_data.test_images), small_data.test_labels, 100)
    loss, correct, total = evaluate(model.net, batches, [mx.cpu()])
    assert correct == on_disk["test_correct"] and total == 256
    assert abs(loss - on_disk["test_loss"]) < 1e-4
    warped, theta = model.stn(mx.nd.array(normalize(small_data.test_images[:4])))
    assert warped.shape == (4, 1, 28, 28) and theta.shape == (4, 6)


class _Interrupt(Exception):
    pass


def _interrupt_at(prefix):
    def echo(line):
        if line.startswith(prefix):
            raise _Interrupt(line)
    return echo


@pytest.mark.slow
def test_resume_continues_exactly_where_the_interrupted_run_stopped(tmp_path, small_data):
    straight = fit(_cfg(tmp_path, epochs=3, save_dir=str(tmp_path / "a")), dataset=small_data,
                   echo=lambda s: None)
    cfg = _cfg(tmp_path, epochs=3, save_dir=str(tmp_path / "b"))
    with pytest.raises(_Interrupt):  # dies during epoch 3, after checkpoint 2
        fit(cfg, dataset=small_data, echo=_interrupt_at("Epoch 3/3"))
    lines = []
    cfg = dataclasses.replace(cfg, resume="auto")
    resumed = fit(cfg, dataset=small_data, echo=lines.append)
    assert "Resumed from" in lines[0] and "after epoch 2" in lines[0]
    assert resumed["epochs"] == 3
    a = mx.nd.load(str(tmp_path / "a" / "model-0000.params"))
    b = mx.nd.load(str(tmp_path / "b" / "model-0000.params"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].asnumpy(), b[k].asnumpy(), rtol=1e-5, atol=1e-6)
    assert resumed["test_correct"] == straight["test_correct"]


@pytest.mark.slow
def test_killed_process_resumes_from_its_last_checkpoint(tmp_path, sample):
    data = tmp_path / "mnist"
    data.mkdir()
    for name, arr in (("train-images-idx3-ubyte.gz", sample.train_images),
                      ("train-labels-idx1-ubyte.gz", sample.train_labels),
                      ("t10k-images-idx3-ubyte.gz", sample.test_images[:200]),
                      ("t10k-labels-idx1-ubyte.gz", sample.test_labels[:200])):
        write_idx(data / name, arr)
    save = tmp_path / "run"
    cmd = [sys.executable, "-m", "stn_gluon", "train", "--epochs", "4", "--data-dir", str(data),
           "--save-dir", str(save), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = save / "checkpoint.zip"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.exists():
                break
            time.sleep(0.01)
        time.sleep(0.3)  # now somewhere inside epoch 2, maybe mid-write of the next checkpoint
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    with zipfile.ZipFile(ckpt) as zf:  # the checkpoint on disk is whole
        assert zf.testzip() is None
        done = json.loads(zf.read("meta.json"))["epoch"]
    assert 1 <= done < 4
    out = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"after epoch {done}" in out.stdout
    assert out.stdout.count("Test set:") == 4 - done + 1  # the remaining epochs, then the final line
    metrics = json.load(open(save / "metrics.json"))
    assert metrics["epochs"] == 4
    assert [r.split(",")[0] for r in open(save / "history.csv").read().split()[1:]] == ["1", "2", "3", "4"]
    assert not [f for f in os.listdir(save) if f.endswith(".tmp")]


@pytest.mark.slow
def test_damaged_checkpoint_is_reported_not_loaded(tmp_path, small_data):
    cfg = _cfg(tmp_path, epochs=1)
    fit(cfg, dataset=small_data, echo=lambda s: None)
    ckpt = tmp_path / "run" / "checkpoint.zip"
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: len(raw) // 2])
    cfg = dataclasses.replace(cfg, resume="auto")
    with pytest.raises(CheckpointError, match="damaged"):
        fit(cfg, dataset=small_data, echo=lambda s: None)
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="damaged"):
        fit(cfg, dataset=small_data, echo=lambda s: None)


def test_resume_with_another_recipe_is_refused(tmp_path, small_data):
    cfg = _cfg(tmp_path, epochs=2)
    with pytest.raises(_Interrupt):
        fit(cfg, dataset=small_data, echo=_interrupt_at("Epoch 2/2"))
    other = _cfg(tmp_path, epochs=2, lr=0.5, resume="auto")
    with pytest.raises(CheckpointError, match="lr 0.02 -> 0.5"):
        fit(other, dataset=small_data, echo=lambda s: None)


def test_two_cpu_contexts_compute_the_same_step_as_one():
    """The data-parallel path (cpu:0,1, as gpu:0,1 would) gives the single-device update."""
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.randn(32, 1, 28, 28).astype(np.float32))
    label = mx.nd.array(rng.randint(0, 10, 32).astype(np.float32))
    results = []
    for ctx in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        mx.random.seed(0)
        net = sg.STNNet(dropout=0.0, loc_lr_mult=0.1, prefix="net_")
        net.initialize(mx.init.Xavier(), ctx=ctx)
        net.hybridize()
        net(mx.nd.zeros((2, 1, 28, 28), ctx=ctx[0]))
        net.stn.regressor.weight.set_data(mx.nd.full(net.stn.regressor.weight.shape, 0.01))
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9},
                                kvstore="device" if len(ctx) > 1 else None)
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        for _ in range(2):
            outs, _, _ = train_step(net, trainer, loss_fn, data, label, ctx)
        assert len(outs) == len(ctx)
        results.append({k: p.data(ctx[-1]).asnumpy() for k, p in net.collect_params().items()})
    for k in results[0]:
        np.testing.assert_allclose(results[1][k], results[0][k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_fit_on_two_cpu_contexts(tmp_path, small_data):
    metrics = fit(_cfg(tmp_path, epochs=3, lr=0.05, ctx="cpu:0,1"), dataset=small_data, echo=lambda s: None)
    assert metrics["context"] == "cpu:0,1"
    assert metrics["test_accuracy"] > 0.6  # it learns (chance: 0.1)


def test_bad_settings_are_clear_errors(tmp_path, small_data):
    with pytest.raises(StnGluonError, match="gpu 0 requested"):
        fit(_cfg(tmp_path, ctx="gpu:0"), dataset=small_data)
    with pytest.raises(StnGluonError, match="larger than the training set"):
        fit(_cfg(tmp_path, batch_size=5000), dataset=small_data)
    with pytest.raises(StnGluonError, match="lr_step_epochs"):
        fit(_cfg(tmp_path, lr_mode="step", lr_step_epochs="a,b"), dataset=small_data)


@pytest.mark.skipif(not os.environ.get("STN_GLUON_DATA"), reason="needs the full MNIST ($STN_GLUON_DATA)")
@pytest.mark.slow
def test_one_epoch_on_full_mnist_reaches_97_percent_and_onnx_agrees(tmp_path):
    from stn_gluon.data.mnist import load_mnist
    from stn_gluon.serve.predictors import load_predictor
    from stn_gluon.export.onnx import export_onnx

    metrics = fit(_cfg(tmp_path, epochs=1, data_dir=os.environ["STN_GLUON_DATA"]), echo=print)
    assert metrics["test_total"] == 10000
    assert metrics["test_accuracy"] >= 0.97
    # the trained model through ONNX Runtime: the same label for every one of the 10,000 test digits
    export_onnx(str(tmp_path / "run"), tmp_path / "model.onnx")
    x = normalize(load_mnist(os.environ["STN_GLUON_DATA"]).test_images)
    mxnet_model = load_predictor(str(tmp_path / "run"), "mxnet")
    ort_model = load_predictor(str(tmp_path / "model.onnx"), "onnxruntime")
    labels = {}
    for name, model in (("mxnet", mxnet_model), ("ort", ort_model)):
        labels[name] = np.concatenate([model.predict(x[i:i + 1000])["logits"].argmax(1)
                                       for i in range(0, 10000, 1000)])
    assert (labels["mxnet"] == labels["ort"]).all()
    assert (labels["ort"] == load_mnist(os.environ["STN_GLUON_DATA"]).test_labels).mean() == metrics["test_accuracy"]


@pytest.mark.slow
def test_training_works_where_pytorch_2_is_installed(tmp_path):
    """gluoncv 0.10 raises on import when torch >= 2 is installed; our import must not."""
    fake = tmp_path / "fake_site" / "torch"
    fake.mkdir(parents=True)
    # with the names other packages probe for (scipy >= 1.16, on Python 3.12, looks up torch.Tensor)
    (fake / "__init__.py").write_text("__version__ = '2.5.0'\nclass Tensor:\n    pass\n")
    code = ("import torch; assert torch.__version__ == '2.5.0'\n"
            "from stn_gluon.train.gluon import TrainConfig, make_lr_scheduler\n"
            "print(make_lr_scheduler(TrainConfig(), 10)(5))\n"
            "import stn_gluon as sg; sg.get_model('stn_cifar_resnet20_v1')\n"
            "print('OK')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent)] + sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-500:]


@pytest.mark.slow
def test_on_epoch_can_end_the_run_early(tmp_path, small_data):
    seen = []

    def stop_after_two(record):
        seen.append(record["epoch"])
        return record["epoch"] == 2

    metrics = fit(_cfg(tmp_path, epochs=5), dataset=small_data, echo=lambda s: None, on_epoch=stop_after_two)
    assert seen == [1, 2] and metrics["epochs"] == 2
    assert (tmp_path / "run" / "model-symbol.json").exists()


@pytest.mark.slow
def test_time_to_accuracy_and_speed_steps(mnist_dir):
    from stn_gluon.bench import time_to_accuracy
    from stn_gluon.bench.competitors import gluon_train_step, module_train_step
    from stn_gluon.bench.harness import median_rate as _median_rate

    result = time_to_accuracy(0.0, str(mnist_dir), echo=lambda s: None, epochs=3)
    assert result["epoch"] == 1 and result["epochs_run"] == 1 and result["seconds"] > 0
    assert 0 < result["startup_seconds"] and result["seconds"] == result["startup_seconds"] + result["seconds_in_call"]
    never = time_to_accuracy(1.01, str(mnist_dir), echo=lambda s: None, epochs=1)
    assert never["seconds"] is None and never["epochs_run"] == 1
    for step in (gluon_train_step(8), module_train_step(8)):
        assert _median_rate(step, 8, seconds=0.05, repeats=2, warmup=1) > 0


@pytest.mark.slow
def test_peak_memory_is_the_training_process_own(mnist_dir):
    """The measurement must not count the (large) process it was started from."""
    from stn_gluon.bench.memory import peak_training_rss as _peak_training_rss

    ballast = np.ones((96, 1024, 1024))  # 768 MiB resident in this process
    peak = _peak_training_rss(str(mnist_dir))
    assert 100 < peak < 700, peak
    del ballast


def test_first_cycle_schedule_warms_up_decays_restarts_and_decays():
    """Warm-up 0.5 epoch, cosine to 0 at epoch 3, restart at the peak, cosine to 0 at the end."""
    cfg = TrainConfig(first_cycle_epochs=3, warmup_epochs=0.5)
    sched = make_lr_scheduler(cfg, 100)
    lrs = np.array([sched(i) for i in range(cfg.epochs * 100 + 1)])
    assert lrs[0] == pytest.approx(cfg.lr / 10) and lrs[50] == pytest.approx(cfg.lr)
    assert np.all(np.diff(lrs[:50]) > 0)  # warm-up rises
    assert np.all(np.diff(lrs[50:300]) <= 1e-12) and lrs[299] < cfg.lr * 1e-3  # first cycle decays to ~0
    assert lrs[300] == pytest.approx(cfg.lr)  # warm restart
    assert np.all(np.diff(lrs[300:]) <= 1e-12) and lrs[-1] < cfg.lr * 1e-3
    one_cycle = make_lr_scheduler(TrainConfig(), 100)  # the default: one cycle
    assert one_cycle(300) > 0.9 * cfg.lr and one_cycle(100) == pytest.approx(cfg.lr)


def test_interleaved_rates_time_every_step_in_turns():
    from stn_gluon.bench.harness import interleaved_rates as _interleaved_rates, ratio as _ratio, timed as _timed

    order = []
    # sleeps long enough that a busy machine's wake-up delay (a millisecond or more) keeps the ratio near 2
    steps = {"a": lambda: (order.append("a"), time.sleep(0.01)),
             "b": lambda: (order.append("b"), time.sleep(0.02))}
    rounds = {}
    rates = _interleaved_rates({k: _timed(s) for k, s in steps.items()}, 10, seconds=0.05, repeats=3, warmup=0,
                               rounds=rounds)
    assert rates["a"] > rates["b"] > 0  # the slower step measures slower
    assert len(rounds["a"]) == len(rounds["b"]) == 3 and rates["a"] == np.median(rounds["a"])
    assert 1.3 < _ratio(rounds, "a", "b") < 2.5 and _ratio(rounds, "a", "c") is None  # ~2x; no peer: None
    runs = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
    assert runs == ["a", "b"] * 3  # one window of each, in turns


@pytest.mark.slow
def test_isolated_competitors_run_in_their_own_processes_and_report_failures():
    """Each competitor is timed in a worker process; its rate, latency and errors come back to the caller."""
    from stn_gluon.bench.harness import Isolated as _Isolated, isolated_rates as _isolated_rates

    latency = {}
    rates = _isolated_rates({"mx": ("gluon_infer", dict(batch=2))}, 2, seconds=0.05, repeats=2, warmup=1,
                            latency=latency)
    assert rates["mx"] > 0 and 0 < latency["mx"]["p50"] <= latency["mx"]["p99"]
    broken = _Isolated("symbolblock_infer", dict(batch=1, prefix="/nonexistent/model"))
    try:
        with pytest.raises(StnGluonError, match="benchmark worker failed: symbolblock_infer"):
            broken.ready()
    finally:
        broken.close()


def test_openmp_pool_is_sized_to_physical_cores_unless_the_user_chose(tmp_path):
    """MXNet on its own halves the CPU count (assumes hyper-threads); the CLI sets OMP_NUM_THREADS first."""
    from stn_gluon._runtime.threads import physical_cores
    from stn_gluon.cli.threads import prepare_threads

    # a fake sysfs: 4 logical CPUs that are 2 cores with 2 hyper-threads each
    for cpu, siblings in enumerate(["0,2", "1,3", "0,2", "1,3"]):
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert physical_cores(range(4), sysfs=str(tmp_path)) == 2
    assert physical_cores([0, 1], sysfs=str(tmp_path)) == 2
    assert physical_cores(range(3), sysfs=str(tmp_path / "missing")) == 3  # unreadable: one core per CPU

    env: dict = {}
    assert prepare_threads("evaluate", environ=env, modules={}).threads == physical_cores()
    assert env["OMP_NUM_THREADS"] == str(physical_cores())
    user = {"OMP_NUM_THREADS": "1"}
    assert prepare_threads("evaluate", environ=user, modules={}).threads is None and user["OMP_NUM_THREADS"] == "1"
    late: dict = {}
    assert prepare_threads("evaluate", environ=late, modules={"mxnet": object()}).threads is None
    assert "OMP_NUM_THREADS" not in late  # too late: no change


@pytest.mark.parametrize("layers", [3, 40])  # 40 layers = 80 parameters: updated in chunks
def test_make_trainer_fused_updates_equal_plain_per_parameter_updates(layers):
    """One fused optimizer call for many parameters computes what MXNet's per-parameter updates do (lr_mult too)."""
    from stn_gluon.train.gluon import MAX_AGGREGATED_PARAMS, make_trainer

    def train(fused):
        net = gluon.nn.HybridSequential(prefix="t_")
        for _ in range(layers):
            net.add(gluon.nn.Dense(5, activation="tanh", in_units=5))
        net.initialize()
        for i, p in enumerate(net.collect_params().values()):
            p.set_data(mx.nd.array(np.random.RandomState(i).normal(0, 0.5, p.shape)))
        net[0].weight.lr_mult = 0.1
        params = {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-3}
        if fused:
            trainer = make_trainer(net.collect_params(), "sgd", params)
            assert trainer._optimizer.aggregate_num == min(2 * layers, MAX_AGGREGATED_PARAMS)
        else:
            opt = mx.optimizer.create("sgd", **params)
            opt.aggregate_num = 0  # one update call per parameter
            trainer = gluon.Trainer(net.collect_params(), opt, kvstore=None)
        x = mx.nd.array(np.random.RandomState(99).normal(size=(4, 5)))
        for _ in range(3):
            with autograd.record():
                loss = (net(x) ** 2).sum()
            loss.backward()
            trainer.step(4)
        return [p.data().asnumpy() for p in net.collect_params().values()]

    for fused, plain in zip(train(True), train(False)):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
    other = gluon.nn.Dense(2, in_units=2)
    other.initialize()
    assert make_trainer(other.collect_params(), "adam", {})._optimizer.aggregate_num == 0  # no fused updates


@pytest.mark.slow
def test_fractional_epochs_cut_the_last_epoch_and_the_schedule_ends_with_it(tmp_path, small_data, monkeypatch):
    import stn_gluon.train.gluon as training

    assert training.epoch_lengths(1.5, 100) == [100, 50] and training.epoch_lengths(2, 100) == [100, 100]
    assert training.epoch_lengths(0.25, 10) == [2] and training.epoch_lengths(0.001, 10) == [1]
    cfg = _cfg(tmp_path, epochs=1.5, warmup_epochs=0.25)
    sched = make_lr_scheduler(cfg, 100)
    assert sched(25) == pytest.approx(cfg.lr) and sched(150) < cfg.lr * 1e-3  # the cosine ends at 1.5 epochs
    steps, real_step = [], training.train_step
    monkeypatch.setattr(training, "train_step", lambda *a: steps.append(1) or real_step(*a))
    seen = []
    metrics = fit(cfg, dataset=small_data, echo=lambda s: None, on_epoch=lambda r: seen.append(len(steps)))
    per_epoch = len(small_data.train_labels) // cfg.batch_size
    assert seen == [per_epoch, per_epoch + round(per_epoch / 2)] and metrics["epochs"] == 2
    with pytest.raises(StnGluonError, match="epochs must be > 0"):
        _cfg(tmp_path, epochs=0).validate()


@pytest.mark.slow
def test_test_each_epoch_false_tests_after_the_last_epoch_only(tmp_path, small_data):
    lines = []
    metrics = fit(_cfg(tmp_path, epochs=2, test_each_epoch=False), dataset=small_data, echo=lines.append)
    assert json.load(open(tmp_path / "run" / "metrics.json"))["config"]["test_each_epoch"] is False
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and ",nan," in rows[1] and ",nan," not in rows[2]
    assert sum(line.startswith("Test set:") for line in lines) == 1  # then the "Final Test set:" line
    assert metrics["best_test_accuracy"] == metrics["test_accuracy"] > 0.2


@pytest.mark.slow
def test_fit_leaves_the_frozen_config_as_given_and_resolves_save_dir(tmp_path, small_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 2  # type: ignore[misc]
    assert cfg.save_dir is None and cfg.resolved().save_dir == "runs/stn_lenet"
    assert cfg.resolved().resolved() == cfg.resolved() and cfg.resolved() != cfg
    before = dataclasses.asdict(cfg)
    fit(cfg, dataset=small_data, echo=lambda s: None)
    assert dataclasses.asdict(cfg) == before  # the run worked on its own copy
    on_disk = json.load(open(tmp_path / "runs" / "stn_lenet" / "metrics.json"))
    assert on_disk["config"]["save_dir"] == "runs/stn_lenet" and on_disk["config"]["workers"] == 1
    assert (tmp_path / "runs" / "stn_lenet" / "stn_grid.png").stat().st_size > 0


def test_the_stn_grids_sample_spreads_over_a_test_split_stored_class_by_class():
    from types import SimpleNamespace

    from stn_gluon.train.steps import PreparedData

    index = PreparedData.sample_index(SimpleNamespace(num_test=2150), 64)  # what stn_grid.png and visualize show
    assert len(index) == 64 and index[0] == 0 and index[-1] == 2149 and np.all(np.diff(index) > 0)
    assert set(index // 50) == set(range(43))  # 43 classes of 50 images, in class order: every class shown
    assert list(PreparedData.sample_index(SimpleNamespace(num_test=10), 64)) == list(range(10))
