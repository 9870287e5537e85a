"""The contention benchmark's harness (process clean-up, ratio arithmetic, workers started as the CLI starts them).

No timed test: the speed figures come from ``stn-gluon bench contention``.
"""
import os
import subprocess
import sys

import pytest

from stn_gluon.bench.contention import PAIR, summarise, contention_lines, median_ratios, settings_env
from stn_gluon.bench.processes import Children, busy_command
from stn_gluon._runtime.threads import BY_CLI, CHOSEN_ENV
from stn_gluon.bench.harness import Isolated
from stn_gluon.cli.threads import LoadSampler


def test_children_are_ended_when_the_block_fails_and_a_busy_load_ends_on_its_own():
    with pytest.raises(RuntimeError):
        with Children(grace=5) as kids:
            stuck = kids.start(busy_command(60))
            sleeper = kids.start([sys.executable, "-c", "import time; time.sleep(60)"])
            raise RuntimeError("the bench failed")
    assert stuck.poll() is not None and sleeper.poll() is not None and not kids.alive
    bounded = subprocess.Popen(busy_command(0.2))
    assert bounded.wait(timeout=30) == 0  # stops by itself after its time limit


def test_ratios_are_medians_of_per_round_ratios_to_the_same_rounds_quiet_figure():
    rounds = {"quiet": [100.0, 200.0, 0.0], "1 busy": [50.0, 150.0, 10.0], PAIR: []}
    ratios = median_ratios(rounds)
    assert ratios["1 busy"] == pytest.approx((0.5 + 0.75) / 2)  # the round without a quiet figure is left out
    assert ratios["quiet"] == 1.0 and ratios[PAIR] is None


def test_report_compares_with_pytorch_and_the_old_default_round_by_round_and_checks_the_targets():
    def rounds(q, b1, b2, pair):
        return {"quiet": q, "1 busy": b1, "2 busy": b2, PAIR: pair}
    train = {"rates": {("new default", "fit"): rounds([1000, 1200], [700, 600], [500, 500], [400, 400]),
                       ("old default", "fit"): rounds([1000, 1000], [300, 300], [100, 100], [80, 80]),
                       ("pytorch defaults", "pytorch eager"): rounds([500, 500], [350, 300], [200, 200], [])},
             "ready": {k: {} for k in [("new default", "fit"), ("old default", "fit"),
                                       ("pytorch defaults", "pytorch eager")]},
             "chosen": {"quiet": [2, 2], "1 busy": [1, 1], "2 busy": [1, 1], PAIR: [1, 2, 1, 1]}}
    serve = {("new default", "mxnet"): {s: [dict(throughput=t, errors=e, error_samples=[], p99_ms=5.0)]
                                         for s, t, e in (("quiet", 100, 0), ("1 busy", 40, 1), ("2 busy", 30, 0))}}
    res = summarise(train, serve, ["new default", "old default"], dict(rounds=2, seconds=1.0, batch=64, clients=32,
                                                                        quick=False, cores=2, wall_s=60))
    fit = res["training"]["new default | fit"]
    assert fit["ratio"]["1 busy"] == pytest.approx((0.7 + 0.5) / 2)
    assert fit["vs_torch"]["1 busy"] == pytest.approx((2.0 + 2.0) / 2)
    targets = {t["target"]: t for t in res["targets"]}
    assert targets["fit quiet, new / old default >= 0.95"]["value"] == pytest.approx(1.1)
    assert targets["fit, two trainings at once, each / quiet >= 0.35"]["met"] is True
    assert targets["serving (mxnet), 1 busy / quiet >= 0.5"]["met"] is False
    assert targets["serving (mxnet), errors with 1 busy == 0"]["met"] is False
    text = "\n".join(contention_lines(res))
    assert "| new default | fit | 1,100 | 650 |" in text and "OMP_NUM_THREADS=2" in text
    assert f"quiet: 2, 2; 1 busy: 1, 1; 2 busy: 1, 1; {PAIR}: 1, 2, 1, 1." in text  # what the fresh workers chose
    assert settings_env("old default", 8)["OMP_NUM_THREADS"] == "8"


def test_load_sampler_counts_only_other_processes(tmp_path):
    stat = tmp_path / "stat"

    def write(busy0, busy1, idle):
        stat.write_text("cpu  0 0 0 0 0 0 0 0\n" + "".join(
            f"cpu{i} {b} 0 0 {idle} 0 0 0 0 0 0\n" for i, b in enumerate((busy0, busy1))))
    own = {"s": 0.0}
    hz = os.sysconf("SC_CLK_TCK")
    write(0, 0, 0)
    sampler = LoadSampler(cpus=[0, 1], stat=str(stat), own=lambda: own["s"])
    write(hz, hz, 0)  # 1 s of wall time, both CPUs busy, half of it this process's own
    own["s"] = 1.0
    assert sampler.sample() == pytest.approx(1.0)
    write(2 * hz, 2 * hz, 0)
    own["s"] = 1.0  # then the others kept both CPUs busy
    assert sampler.sample() == pytest.approx(2.0)
    write(2 * hz, 2 * hz, 2 * hz)  # then the machine is free
    assert sampler.sample() == pytest.approx(0.0)


@pytest.mark.slow
def test_a_cli_started_worker_chooses_its_count_as_stn_gluon_train_does(tmp_path):
    """The bench's default ``fit`` worker: its count chosen before MXNet loads, recorded as the CLI's."""
    worker = Isolated("fit_train", dict(batch=4), env={"OMP_NUM_THREADS": None, CHOSEN_ENV: None},
                      cli_slots=str(tmp_path / "slots"))
    try:
        info = worker.ready()
    finally:
        worker.close()
    report = info["threads"]
    assert report["omp_num_threads_from"] == BY_CLI and report["chosen"].startswith(("chosen at start", "one per"))
    assert info["mxnet_threads"] == report["threads_now"] == int(info["omp_num_threads"]) >= 1


def test_a_server_started_in_another_checkout_runs_that_checkouts_package(tmp_path):
    """scripts/load_test.py --baseline: `python -m stn_gluon` imports the working folder's package before
    PYTHONPATH's, so the baseline's server must start in its own folder (it once ran this checkout's code)."""
    from stn_gluon.bench.processes import start_server

    package = tmp_path / "stn_gluon"
    package.mkdir()
    (package / "__init__.py").write_text("")
    marker = tmp_path / "ran"
    (package / "__main__.py").write_text(
        "import socket, sys, time\n"
        f"open({str(marker)!r}, 'w').write(__file__)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[sys.argv.index('--port') + 1]))); s.listen(1)\n"
        "time.sleep(60)\n")
    with Children() as children:
        start_server(children, "model.onnx", None, env=dict(os.environ, PYTHONPATH=str(tmp_path)), cwd=str(tmp_path),
                     timeout_s=30)
    assert marker.read_text() == str(package / "__main__.py")
