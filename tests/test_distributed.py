"""Distributed training on MXNet's parameter-server kvstore, on loopback (issue 17).

The jobs run a scheduler, one server and two workers as separate processes
(:func:`stn_gluon.train.distributed.launch`, 127.0.0.1 only, bounded by a timeout
that stops every process), each worker running ``tests/dist_worker.py`` on
384 digits of the embedded real MNIST sample with one OpenMP thread.
"""
import json
import os
import re
import sys
import time

import numpy as np
import pytest

from stn_gluon.train.distributed import (LOOPBACK, Job, StnGluonError, WorkerGroup, free_port, launch, read_hostfile,
                                   role_environments, ssh_command)
from stn_gluon._runtime.files import CHECKPOINT_NAME, load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dist_worker.py")
JOB_TIMEOUT = 240  # seconds: a job that hangs is stopped (every process) and fails its test
DIED_WITHIN = 15  # seconds from a worker's death to the end of the whole job
# batch 16 x 2 workers = 32: 12 steps in an epoch of 384 digits; no dropout (its masks are drawn per worker)
RECIPE = dict(batch_size=16, dropout=0.0, progress=False, kvstore="dist_sync")


def run_job(tmp_path, trainer, config, env=None, name="job"):
    """Launch 2 workers + 1 server on ``config``; ``(exit status, launcher lines, dump folder, seconds)``."""
    dump = tmp_path / f"{name}-dump"
    dump.mkdir()
    lines = []
    tic = time.time()
    code = launch([sys.executable, WORKER, trainer, json.dumps(config), str(dump)], 2, 1,
                  env=dict(env or {}, OMP_NUM_THREADS="1"), timeout=JOB_TIMEOUT, echo=lines.append)
    return code, lines, dump, time.time() - tic


def weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def single_process(monkeypatch, trainer, config):
    """The same run in this process with one worker and the doubled batch: the weights it ends with."""
    from dist_worker import subset

    from stn_gluon.train.recipes import TrainConfig

    seen = {}
    monkeypatch.setattr(WorkerGroup, "compare_weights",
                        lambda self, arrays, **kw: seen.update({k: v.asnumpy() for k, v in arrays.items()}))
    cfg = TrainConfig(**dict(config, kvstore="device", batch_size=2 * config["batch_size"]))
    if trainer == "gluon":
        from stn_gluon.train.gluon import fit
    else:
        from stn_gluon.train.module import fit_module as fit
    metrics = fit(cfg, dataset=subset(), echo=lambda line: None)
    return seen, metrics


@pytest.mark.parametrize("trainer", ["gluon", "module"])
@pytest.mark.slow
def test_two_workers_are_one_process_with_the_doubled_batch(tmp_path, monkeypatch, trainer):
    save = tmp_path / "run"
    config = dict(RECIPE, epochs=1, save_dir=str(save))
    code, lines, dump, seconds = run_job(tmp_path, trainer, config)
    assert code == 0, lines
    w0, w1 = weights(dump / "worker0.npz"), weights(dump / "worker1.npz")
    assert w0.keys() == w1.keys()
    different = {k: float(np.abs(w0[k] - w1[k]).max()) for k in w0 if not np.array_equal(w0[k], w1[k])}
    assert not different, (different, lines)  # bit-identical workers
    # Exact equality with one process is impossible: it sums the 32 per-image gradients of a step in one
    # backward pass, the job sums two sums of 16 (on the server), and float addition is not associative.
    # What is true: after 12 steps every weight agrees to within 1e-6 (measured: 1.5e-8 at most).
    reference, single_metrics = single_process(monkeypatch, trainer, dict(config, save_dir=str(tmp_path / "one")))
    assert reference.keys() == w0.keys()
    worst = max(float(np.abs(w0[k] - reference[k]).max()) for k in w0)
    assert worst < 1e-6, worst
    metrics = json.loads((save / "metrics.json").read_text())
    assert abs(metrics["test_loss"] - single_metrics["test_loss"]) < 1e-4
    assert metrics["distributed"]["workers"] == 2 and metrics["distributed"]["weights_identical"] is True
    assert metrics["config"]["workers"] == 2 and metrics["config"]["batch_size"] == 16
    # only worker 0 wrote files; worker 1 touched nothing under the save dir
    writes0 = json.loads((dump / "writes0.json").read_text())
    writes1 = json.loads((dump / "writes1.json").read_text())
    assert writes0 and writes1 == []
    if trainer == "gluon":
        check_tools(save, tmp_path)


def check_tools(save, tmp_path):
    """The job's save dir loads with evaluate, predict, export-onnx and visualize."""
    from dist_worker import subset

    from stn_gluon.cli import main

    digits = tmp_path / "digits.npy"
    np.save(digits, subset().test_images[:3])
    assert main(["evaluate", "--model", str(save), "--json"]) == 0
    assert main(["predict", "--model", str(save), "--json", str(digits)]) == 0
    assert main(["export-onnx", "--model", str(save)]) == 0
    assert main(["predict", "--model", str(save / "model.onnx"), str(digits)]) == 0
    assert main(["visualize", "--model", str(save), "--out", str(tmp_path / "grid.png"), "--count", "8"]) == 0
    assert (tmp_path / "grid.png").is_file()


@pytest.mark.slow
def test_a_killed_worker_ends_the_job_and_resume_finishes_it(tmp_path):
    save = tmp_path / "run"
    config = dict(RECIPE, epochs=2, save_dir=str(save))
    # worker rank 1 kills itself (SIGKILL) at step 3 of epoch 2, after epoch 1 was checkpointed
    code, lines, dump, _ = run_job(tmp_path, "gluon", config, env=dict(STN_TEST_KILL_AT="1:1:3"), name="killed")
    ended = time.time()
    assert code != 0
    assert ended - float((dump / "killed_at").read_text()) < DIED_WITHIN
    died = [line for line in lines if "SIGKILL" in line]
    assert len(died) == 1 and re.search(r"worker \d \(pid \d+\) was killed by SIGKILL; stopped the job", died[0])
    with load_checkpoint(str(save / CHECKPOINT_NAME)) as (meta, _params, _state):
        assert meta["epoch"] == 1 and len(meta["history"]) == 1
    assert not (save / "metrics.json").exists()

    code, lines, dump, _ = run_job(tmp_path, "gluon", dict(config, resume="auto"), name="resumed")
    assert code == 0, lines
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["distributed"]["weights_identical"] is True
    assert [r["epoch"] for r in load_history(save)] == [1, 2]


def load_history(save):
    import csv

    with open(save / "history.csv") as f:
        return [dict(r, epoch=int(r["epoch"])) for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------- without processes: cheap


def test_worker_shards_are_the_single_process_batch(sample):
    from stn_gluon.data.mnist import ArrayBatches, RandomAffine

    pixels, labels = sample.train_images[:100], sample.train_labels[:100]
    one = ArrayBatches(pixels, labels, 20, shuffle=True, seed=3, last_batch="discard")
    parts = [ArrayBatches(pixels, labels, 10, shuffle=True, seed=3, last_batch="discard", shard=(r, 2))
             for r in range(2)]
    for b in [one] + parts:
        b.set_epoch(4)
    assert len(one) == len(parts[0]) == 5
    for whole, *halves in zip(one, *parts):
        assert np.array_equal(whole[1].asnumpy(), np.concatenate([h[1].asnumpy() for h in halves]))
    warp = RandomAffine(seed=1)
    warp.set_epoch(2)
    shards = [RandomAffine(seed=1, shard=(r, 2)) for r in range(2)]
    x = next(iter(one))[0]
    for s in shards:
        s.set_epoch(2)
    joined = np.concatenate([s(x[10 * r:10 * (r + 1)]).asnumpy() for r, s in enumerate(shards)])
    assert np.allclose(warp(x).asnumpy(), joined, atol=1e-6)
    with pytest.raises(StnGluonError, match="shard"):
        ArrayBatches(pixels, labels, 10, shard=(2, 2), last_batch="discard")


def test_launch_refuses_what_cannot_work(tmp_path, monkeypatch):
    import socket

    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        with pytest.raises(StnGluonError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            launch(["true"], 1, 1, port=busy.getsockname()[1], echo=lambda line: None)
    with pytest.raises(StnGluonError, match="hostfile"):
        launch(["true"], 1, 1, launcher="ssh", echo=lambda line: None)
    empty = tmp_path / "hosts"
    empty.write_text("# nothing\n\n")
    with pytest.raises(StnGluonError, match="names no machine"):
        read_hostfile(str(empty))
    monkeypatch.setenv("DMLC_ROLE", "worker")
    with pytest.raises(StnGluonError, match="would train alone"):
        WorkerGroup("local")
    monkeypatch.delenv("DMLC_ROLE")
    monkeypatch.delenv("DMLC_PS_ROOT_URI", raising=False)
    with pytest.raises(StnGluonError, match="stn-gluon launch"):
        WorkerGroup("dist_sync")


def test_roles_and_ssh_commands(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1\n10.0.0.2:2222 slots=4\n")
    assert read_hostfile(str(hosts)) == [("10.0.0.1", "22"), ("10.0.0.2", "2222")]
    roles = role_environments(2, 1, LOOPBACK, 9000, LOOPBACK)
    assert [(r, i) for r, i, _ in roles] == [("scheduler", 0), ("server", 0), ("worker", 0), ("worker", 1)]
    assert all(e["DMLC_PS_ROOT_URI"] == LOOPBACK and e["DMLC_NODE_HOST"] == LOOPBACK and e["DMLC_NUM_WORKER"] == "2"
               and e["DMLC_ROLE"] == r for r, _, e in roles)
    cmd = ssh_command(("10.0.0.2", "2222"), roles[2][2], ["python3", "-m", "stn_gluon", "train"], "/data/run")
    assert cmd[:2] == ["ssh", "-tt"] and "10.0.0.2" in cmd and "2222" in cmd
    assert "export DMLC_ROLE=worker;" in cmd[-1] and "export DMLC_NODE_HOST=10.0.0.2;" in cmd[-1]
    assert cmd[-1].endswith("cd /data/run; exec python3 -m stn_gluon train")
    assert 1024 < free_port() < 65536


def test_worker_command_adds_the_dist_store():
    from stn_gluon.cli.commands import worker_command

    assert worker_command(["--", "train", "--epochs", "1"], "py") == ["py", "-m", "stn_gluon", "train", "--epochs",
                                                                     "1", "--kvstore", "dist_sync"]
    assert worker_command(["train-symbol", "--kvstore=dist_async"], "py")[-1] == "--kvstore=dist_async"
    assert worker_command(["./my_loop.sh", "x"]) == ["./my_loop.sh", "x"]


def test_a_failing_process_stops_the_job():
    """Any role that exits non-zero ends the job at once, with one line naming it (no mxnet needed)."""
    job = Job([sys.executable, "-c", "import time; time.sleep(60)"], 2, 1,
              ps_command=[sys.executable, "-c", "import os, sys, time; "
                          "sys.exit(3) if os.environ['DMLC_ROLE'] == 'server' else time.sleep(60)"],
              echo=lambda line: None).start()
    tic = time.time()
    assert job.wait(timeout=30) == 3
    assert time.time() - tic < DIED_WITHIN
    assert job.failure.startswith("server 0 (pid ") and "exited with status 3" in job.failure
    assert all(p.poll() is not None for _, _, p in job.processes)


def test_a_scheduler_that_cannot_bind_says_so_in_one_line():
    """The scheduler's port taken after the launcher checked it (a race): one line, status 2."""
    import socket
    import subprocess

    from stn_gluon.train.distributed import PS_NODE_CODE

    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ, OMP_NUM_THREADS="1", DMLC_ROLE="scheduler", DMLC_PS_ROOT_URI=LOOPBACK,
                   DMLC_PS_ROOT_PORT=str(port), DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="1", DMLC_NODE_HOST=LOOPBACK)
        done = subprocess.run([sys.executable, "-c", PS_NODE_CODE], env=env, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith(f"error: scheduler could not listen on {LOOPBACK}:{port} (") and "bind" in done.stderr


def test_launch_command_line_errors(capsys):
    from stn_gluon.cli import main

    assert main(["launch", "-n", "2", "--"]) == 2
    assert "give the worker command after --" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["launch", "-n", "0", "--", "train"])
    assert "must be >= 1" in capsys.readouterr().err


REPORT = ("import json, os, sys; from stn_gluon._runtime.threads import thread_report; r = thread_report(); "
          "open(os.path.join(sys.argv[1], os.environ['DMLC_ROLE'] + os.environ['DMLC_TASK_ID']), 'w')"
          ".write(json.dumps([r['omp_num_threads'], r['omp_num_threads_from']]))")


def test_launch_divides_the_cores_among_its_processes_and_passes_each_its_count(tmp_path, monkeypatch):
    """Workers share the cores, servers and the scheduler get one thread; none reads as the user's setting."""
    from stn_gluon._runtime.threads import BY_LAUNCH, CHOSEN_ENV, physical_cores
    from stn_gluon.train.distributed import launch_threads

    assert launch_threads(2, 2, 1) == dict(worker=1, server=1, scheduler=1)
    assert launch_threads(8, 2, 1)["worker"] == 4 and launch_threads(1, 3, 2)["worker"] == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(CHOSEN_ENV, '{"threads": 2, "by": "stn_gluon"}')  # a stn-gluon parent's own choice
    started = {}
    real_start = Job.start

    def start(job):
        started["threads"] = job.threads
        job.ps_command = [sys.executable, "-c", REPORT, str(tmp_path)]
        return real_start(job)
    monkeypatch.setattr(Job, "start", start)
    lines = []
    assert launch([sys.executable, "-c", REPORT, str(tmp_path)], 2, 1, timeout=60, echo=lines.append) == 0
    cores = physical_cores()
    assert started["threads"] == launch_threads(cores, 2, 1)
    seen = {p.name: json.loads(p.read_text()) for p in tmp_path.iterdir()}
    worker = str(max(1, cores // 2))
    assert seen == {"scheduler0": ["1", BY_LAUNCH], "server0": ["1", BY_LAUNCH],
                    "worker0": [worker, BY_LAUNCH], "worker1": [worker, BY_LAUNCH]}
    assert any(line.startswith(f"launch: CPU threads: {worker} per worker") for line in lines)


def test_launch_leaves_the_users_count_to_every_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real_start = Job.start

    def start(job):
        job.ps_command = [sys.executable, "-c", REPORT, str(tmp_path)]
        return real_start(job)
    monkeypatch.setattr(Job, "start", start)
    assert launch([sys.executable, "-c", REPORT, str(tmp_path)], 1, 1, timeout=60, echo=lambda line: None) == 0
    assert {tuple(json.loads(p.read_text())) for p in tmp_path.iterdir()} == {("1", "user")}


# ---- security: where a job listens, what the ssh command line carries -------------------------------------

LISTENING = ("import json, os, sys; import stn_gluon; import mxnet as mx; kv = mx.kv.create('dist_sync'); "
             "port = int(os.environ['DMLC_PS_ROOT_PORT']); rows = open('/proc/net/tcp').read().splitlines()[1:]; "
             "found = [r.split()[1].split(':')[0] for r in rows if r.split()[3] == '0A' "
             "and int(r.split()[1].split(':')[1], 16) == port]; "
             "dmlc = {k: v for k, v in os.environ.items() if k.startswith('DMLC_')}; "
             "open(sys.argv[1], 'w').write(json.dumps([found, dmlc]))")


@pytest.mark.slow
def test_a_local_job_listens_on_loopback_even_with_dmlc_variables_inherited(tmp_path, monkeypatch):
    """DMLC_USE_KUBERNETES=1 makes ps-lite's scheduler bind 0.0.0.0, DMLC_LOCAL puts sockets in /tmp: a real job
    started with them in the environment still listens on 127.0.0.1 only, and says it ignored them."""
    for name, value in (("DMLC_USE_KUBERNETES", "1"), ("DMLC_LOCAL", "1"), ("DMLC_INTERFACE", "eth0"),
                        ("DMLC_NODE_HOST", "0.0.0.0")):
        monkeypatch.setenv(name, value)
    out = tmp_path / "worker.json"
    lines = []
    code = launch([sys.executable, "-c", LISTENING, str(out)], 1, 1, env=dict(OMP_NUM_THREADS="1"),
                  timeout=JOB_TIMEOUT, echo=lines.append)
    assert code == 0, lines
    found, dmlc = json.loads(out.read_text())
    assert found == ["0100007F"]  # the scheduler's port: 127.0.0.1 only, not 00000000 (0.0.0.0)
    assert dmlc["DMLC_NODE_HOST"] == LOOPBACK and not {"DMLC_USE_KUBERNETES", "DMLC_LOCAL", "DMLC_INTERFACE"} & set(dmlc)
    ignored = [line for line in lines if "ignoring" in line]
    assert ignored == ["launch: ignoring DMLC_INTERFACE, DMLC_LOCAL, DMLC_NODE_HOST, DMLC_USE_KUBERNETES from the "
                       "environment (launch sets the DMLC_* variables of its processes; a local job listens on "
                       "127.0.0.1 only)"]
    with pytest.raises(StnGluonError, match="env sets DMLC_USE_KUBERNETES; launch sets the DMLC_"):
        launch(["true"], 1, 1, env=dict(DMLC_USE_KUBERNETES="1"), echo=lambda line: None)


def test_the_ssh_command_line_quotes_values_and_carries_no_credential(tmp_path, monkeypatch):
    """What the remote shell runs, run here by sh: every value arrives as it was, nothing else runs, and
    credentials of this environment are not on the command line."""
    import subprocess

    tricky = "a b; touch pwned; $(touch pwned2) `touch pwned3` 'q' \"d\""
    monkeypatch.setenv("KMP_AFFINITY", tricky)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/my libs;/x")
    for secret in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "GITHUB_TOKEN", "MY_PASSWORD"):
        monkeypatch.setenv(secret, "s3cr3t-value")
    env = dict(role_environments(1, 1, "10.0.0.1", 9000)[2][2], DMLC_EXTRA="x y;z")
    cmd = ssh_command(("10.0.0.2", "22"), env, [sys.executable, "-c",
                      "import json, os; print(json.dumps(dict(os.environ)))"], str(tmp_path))
    assert cmd[:6] == ["ssh", "-tt", "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]
    assert "s3cr3t" not in " ".join(cmd) and "AWS_" not in cmd[-1] and "TOKEN" not in cmd[-1]
    done = subprocess.run(["sh", "-c", cmd[-1]], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["KMP_AFFINITY"] == tricky and got["LD_LIBRARY_PATH"] == "/opt/my libs;/x"
    assert got["DMLC_EXTRA"] == "x y;z" and got["DMLC_ROLE"] == "worker" and got["DMLC_NODE_HOST"] == "10.0.0.2"
    assert not any(k.startswith("AWS_") or k in ("GITHUB_TOKEN", "MY_PASSWORD") for k in got)
    assert not list(tmp_path.glob("pwned*"))
    # a credential or a bad name given to the job itself: refused in one line, before anything starts
    from stn_gluon.train.distributed import remote_env

    with pytest.raises(StnGluonError, match="AWS_SECRET_ACCESS_KEY looks like a credential"):
        remote_env(dict(AWS_SECRET_ACCESS_KEY="x"), environ={})
    with pytest.raises(StnGluonError, match="is not an environment variable name"):
        remote_env({"A;rm -rf /": "x"}, environ={})
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.2\n")
    started = []
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: started.append(a) or pytest.fail("started"))
    with pytest.raises(StnGluonError, match="API_TOKEN looks like a credential"):
        launch(["true"], 1, 1, launcher="ssh", hostfile=str(hosts), host_ip=LOOPBACK, env=dict(API_TOKEN="t"),
               echo=lambda line: None)
    assert started == []


def test_launch_help_says_what_a_jobs_ports_expose(capsys):
    from stn_gluon.cli import main

    with pytest.raises(SystemExit):
        main(["launch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "no authentication" in text and "every server (whatever the kvstore) unpickles" in text
    assert "never from the internet" in text and "StrictHostKeyChecking=accept-new" in text
    assert "never a credential" in text
