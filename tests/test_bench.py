"""The speed benchmark's competitors, worker protocol and reports, and the fast-loop example (no timing asserted)."""
import os
import re
import subprocess
import sys

import pytest

from stn_gluon._runtime.errors import StnGluonError

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_user_loops_build_and_train_a_few_steps():
    from stn_gluon.bench.competitors import gluon_user_loop_fast_step, gluon_user_loop_step
    from stn_gluon.bench.harness import median_rate

    for factory in (gluon_user_loop_step, gluon_user_loop_fast_step):
        step = factory(4)
        step()
        assert median_rate(step, 4, seconds=0.01, repeats=1, warmup=1) > 0


@pytest.mark.slow
def test_plain_user_loop_worker_starts_as_a_user_script_and_the_fast_one_with_the_library_threads():
    """The plain loop's worker imports mxnet first with the user's OMP_NUM_THREADS; the fast one gets stn_gluon's."""
    from stn_gluon.bench.harness import Competitor, isolated_rates
    from stn_gluon._runtime.threads import USER_OMP_NUM_THREADS

    settings, rounds = {}, {}
    specs = {"plain": Competitor("gluon_user_loop", dict(batch=4), plain_mxnet=True),
             "fast": ("gluon_user_loop_fast", dict(batch=4))}
    rates = isolated_rates(specs, 4, seconds=0.02, repeats=2, warmup=1, rounds=rounds, settings=settings)
    assert rates["plain"] > 0 and rates["fast"] > 0 and len(rounds["plain"]) == len(rounds["fast"]) == 2
    assert settings["plain"]["omp_num_threads"] == USER_OMP_NUM_THREADS  # None unless the user set it
    assert settings["fast"]["omp_num_threads"] == os.environ["OMP_NUM_THREADS"]
    assert all(isinstance(s["mxnet_threads"], int) and s["mxnet_threads"] >= 1 for s in settings.values())


FAKE_REGISTRY = """
import os
def multi_line(**kwargs):
    raise ValueError("the first line\\nthe second line\\n")
def crash(**kwargs):
    os._exit(3)
FACTORIES = {"multi_line": multi_line, "crash": crash}
"""


@pytest.mark.slow
def test_worker_failures_come_back_as_one_line(tmp_path, monkeypatch):
    from stn_gluon.bench.competitors import exported_model
    from stn_gluon.bench.harness import Isolated, isolated_rates

    (tmp_path / "fake_registry.py").write_text(FAKE_REGISTRY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    prefix, _ = exported_model(str(tmp_path))
    cases = [(("symbolblock_infer", dict(batch=1, prefix=prefix, shape=[1, 5, 5])),
              "benchmark worker failed: symbolblock_infer: MXNetError: Error in operator"),
             (("gluon_user_loop", dict(batch=4, bogus=1), True), "benchmark worker failed: gluon_user_loop: TypeError: "),
             (("no_such_kind", {}), "benchmark worker failed: no_such_kind: KeyError: "),
             (("multi_line", {}, False, "fake_registry"), "benchmark worker failed: multi_line: ValueError: the first line"),
             (("crash", {}, False, "fake_registry"), "a benchmark worker died (exit code 3)")]
    for spec, start in cases:
        worker = Isolated(*spec)
        try:
            with pytest.raises(StnGluonError) as err:
                worker.ready()
        finally:
            worker.close()
        assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(StnGluonError, match="^benchmark worker failed: no_such_kind: KeyError: "):
        isolated_rates({"x": ("no_such_kind", {})}, 1, seconds=0.01, repeats=1)


def test_speed_report_tables_show_the_user_loops_and_their_ratios():
    from stn_gluon.bench.reports import speed_lines

    rates = {"gluon imperative": 500.0, "gluon hybridized": 1400.0, "module": 1300.0, "gluon_user_loop": 950.0,
             "gluon_user_loop_fast": 1380.0}
    res = {"train": {64: dict(rates, **{"pytorch eager": 1000.0})}, "infer": {}, "latency_ms": {},
           "scaling_batch": {64: 1400.0}, "scaling_size": {28: 1400.0}, "peak_train_rss_mib": 300.0, "threads": "2",
           "user_loop_threads": {"gluon_user_loop": 1, "gluon_user_loop_fast": 2},
           "ratios": {"train 64: gluon hybridized / pytorch eager": 1.41, "train 64: gluon_user_loop / pytorch eager": 0.95,
                      "train 64: gluon_user_loop_fast / pytorch eager": 1.38,
                      "train 64: gluon_user_loop_fast / gluon_user_loop": 1.45}}
    text = "\n".join(speed_lines(res, have_torch=True))
    assert "| 64 | 500 | 1,400 | 1,300 | 1,000 | 1.41x |" in text  # the existing table, unchanged
    assert "| 64 | 950 | 1,380 | 1,000 | 0.95x | 1.38x | 1.45x |" in text
    assert "the loss read every step), 1 OpenMP threads; " in text and "(`examples/fast_loop.py`), 2 OpenMP" in text
    del res["train"][64]["pytorch eager"]
    res["ratios"] = {"train 64: gluon_user_loop_fast / gluon_user_loop": 1.45}
    text = "\n".join(speed_lines(res, have_torch=False))
    assert "| 64 | 950 | 1,380 | n/a | n/a | n/a | 1.45x |" in text and "no peer figures" in text


def test_training_ratios_pair_each_loop_with_its_peer():
    from stn_gluon.bench.speed import train_ratios

    rounds = {"gluon hybridized": [140.0, 150.0], "gluon_user_loop": [100.0, 90.0],
              "gluon_user_loop_fast": [150.0, 135.0], "pytorch eager": [100.0, 100.0]}
    ratios = train_ratios(rounds, 64)
    assert ratios["train 64: gluon_user_loop_fast / gluon_user_loop"] == pytest.approx(1.5)
    assert ratios["train 64: gluon_user_loop / pytorch eager"] == pytest.approx(0.95)
    assert ratios["train 64: gluon hybridized / pytorch eager"] == pytest.approx(1.45)
    del rounds["pytorch eager"]
    ratios = train_ratios(rounds, 64)
    assert ratios["train 64: gluon_user_loop_fast / pytorch eager"] is None
    assert ratios["train 64: gluon_user_loop_fast / gluon_user_loop"] == pytest.approx(1.5)


@pytest.mark.slow
def test_bench_inference_script_calls_the_library(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_inference.py"), "--batches", "1,2",
                           "--seconds", "0.02", "--repeats", "1", "--latency-count", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    payload = json.load(open(out / "results.json"))
    for backend in ("mxnet", "onnxruntime"):
        assert set(payload["results"][backend]["throughput"]) == {"1", "2"}
        latency = payload["results"][backend]["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"]
    assert "| throughput, batch 2 (images/s) |" in (out / "results.md").read_text()
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_inference.py"), "--model",
                          str(tmp_path / "missing"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_fast_loop_example_trains_a_few_steps(tmp_path, mnist_dir):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "fast_loop.py"), "--data-dir",
                           str(mnist_dir), "--steps", "3", "--batch-size", "16"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r"epoch 1: loss ([\d.]+), accuracy ([\d.]+), [\d,]+ images/s", proc.stdout)
    assert match and 0 < float(match.group(1)) < 10 and 0 <= float(match.group(2)) <= 1, proc.stdout
