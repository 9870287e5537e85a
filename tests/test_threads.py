"""The thread policy: ``import stn_gluon`` changes nothing, the CLI and ``launch`` choose ``OMP_NUM_THREADS``
before MXNet loads, a short burst of load at start does not lower the count, the library reports and warns."""
import json
import os
import subprocess
import sys
import time
import warnings

import pytest

from stn_gluon._runtime import threads
from stn_gluon._runtime.threads import (BY_CLI, BY_LAUNCH, CHOSEN_ENV, check_threads, describe_threads, mark_chosen,
                                        physical_cores, thread_report, user_environ, user_setting)
from stn_gluon.cli.threads import (DROP_AT, JobSlots, LoadSampler, command_of, prepare_threads, sustained_load,
                                   threads_for)

OPENMP = ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", CHOSEN_ENV, "MXNET_SUBGRAPH_VERBOSE")


def clean_env(**extra):
    return dict({k: v for k, v in os.environ.items() if k not in OPENMP}, **extra)


def test_importing_the_package_and_the_cli_changes_no_environment_variable_and_loads_no_mxnet():
    code = ("import json, os, sys; before = dict(os.environ); import stn_gluon, stn_gluon.cli, stn_gluon.cli.threads; "
            "print(json.dumps([dict(os.environ) == before, 'mxnet' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [True, False]


SPY = """
import json, sys
import stn_gluon.cli as cli
seen = {}
real = cli.prepare_threads
def spy(command, **kwargs):
    seen["mxnet_loaded"] = "mxnet" in sys.modules
    seen["command"] = command
    return real(command, **kwargs)
cli.prepare_threads = spy
code = cli.main(sys.argv[1:])
import os
seen.update(code=code, omp=os.environ.get("OMP_NUM_THREADS"), verbose=os.environ.get("MXNET_SUBGRAPH_VERBOSE"),
            mxnet_loaded_after="mxnet" in sys.modules)
print(json.dumps(seen))
"""


@pytest.mark.parametrize("user, expected", [(None, str(physical_cores())), ("1", "1")])
@pytest.mark.slow
def test_the_cli_chooses_before_mxnet_loads_and_the_users_setting_wins(user, expected):
    env = clean_env(**({"OMP_NUM_THREADS": user} if user else {}))
    out = subprocess.run([sys.executable, "-c", SPY, "evaluate", "--model", "/nonexistent/run"], env=env,
                         capture_output=True, text=True, timeout=120)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["mxnet_loaded"] is False and seen["mxnet_loaded_after"] is True and seen["command"] == "evaluate"
    assert seen["code"] == 2 and out.stderr.startswith("error: ")  # the command itself ran (and refused)
    assert seen["omp"] == expected and seen["verbose"] == "0"


def test_commands_get_their_counts_and_a_parents_choice_is_not_the_users(tmp_path):
    cores = physical_cores()
    env = {}
    assert prepare_threads("evaluate", environ=env, modules={}).threads == cores
    assert env["OMP_NUM_THREADS"] == str(cores) and env["MXNET_SUBGRAPH_VERBOSE"] == "0"
    assert thread_report(env)["omp_num_threads_from"] == BY_CLI and user_setting(env) is None
    child = dict(env)  # a stn-gluon command started by this one chooses again ...
    assert prepare_threads("serve", environ=child, modules={}).threads == 1 and child["OMP_NUM_THREADS"] == "1"
    launcher = dict(env)  # ... and launch keeps none of it (its children must not inherit it)
    assert prepare_threads("launch", environ=launcher, modules={}).threads is None
    assert "OMP_NUM_THREADS" not in launcher
    user = {"OMP_NUM_THREADS": "3"}
    assert prepare_threads("train", environ=user, modules={}).threads is None and user["OMP_NUM_THREADS"] == "3"
    launched = {}
    mark_chosen(launched, 1, BY_LAUNCH, "2 cores divided among 2 workers on this machine")
    assert prepare_threads("train", environ=launched, modules={}).threads is None
    assert thread_report(launched)["omp_num_threads_from"] == BY_LAUNCH
    late = {}
    assert prepare_threads("train", environ=late, modules={"mxnet": object()}).threads is None and late == {}
    assert command_of(["train", "--epochs", "1"]) == "train" and command_of(["train", "--help"]) is None


def test_report_and_line_say_who_chose_the_count():
    chosen = {}
    mark_chosen(chosen, 2, BY_CLI, "chosen at start: 2 cores, other processes busy on 0.0 CPUs", 0.0)
    report = thread_report(chosen)
    assert report["omp_num_threads"] == "2" and report["threads_now"] == 2 and report["adaptive"] is True
    assert describe_threads(report).startswith("CPU threads: 2 (chosen at start: 2 cores")
    overridden = dict(chosen, OMP_NUM_THREADS="4")  # the user changed it afterwards: theirs
    assert thread_report(overridden)["omp_num_threads_from"] == "user" and user_setting(overridden) == "4"
    assert user_environ(overridden)["OMP_NUM_THREADS"] == "4" and CHOSEN_ENV not in user_environ(overridden)
    assert "OMP_NUM_THREADS" not in user_environ(chosen)
    unset = thread_report({})
    assert unset["omp_num_threads_from"] is None and unset["threads_now"] == max(1, (os.cpu_count() or 1) // 2)
    assert "MXNet's default" in describe_threads(unset)


def test_a_bad_setting_is_warned_about_once_in_one_line(monkeypatch):
    monkeypatch.setattr(threads, "_WARNED", set())
    too_many = {"OMP_NUM_THREADS": str(physical_cores() + 3)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_threads(too_many) is not None
        assert check_threads(too_many) is not None
        assert check_threads({"OMP_NUM_THREADS": "two"}) is not None
        assert check_threads({"OMP_NUM_THREADS": "1"}) is None
        assert check_threads({"OMP_NUM_THREADS": "1"}, most=1) is None
    assert [len(str(w.message).splitlines()) for w in caught] == [1, 1]  # once each, one line each
    assert "more than the" in str(caught[0].message) and "not a whole number" in str(caught[1].message)


class FakeSampler:
    """A load sampler that replays ``loads`` (one per look) against a fake clock."""

    def __init__(self, loads, clock):
        self.loads, self.clock, self.started = list(loads), clock, 0.0

    def sample(self):
        return self.loads.pop(0) if self.loads else 0.0


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.mark.parametrize("loads, expected, most_s", [
    ([0.0], 0.0, 0.25),                           # quiet: decided at the first look
    ([1.0, 1.0, 1.0, 0.0], 0.0, 1.0),             # a burst that ends within the window: no load
    ([1.0] * 20, 1.0, 2.75),                      # still there at the end: load, and no longer than the bound
    ([2.0] + [1.2] * 20, 1.2, 2.75),              # what is left at the end counts
])
def test_a_load_counts_only_when_it_lasts_and_the_wait_is_bounded(loads, expected, most_s):
    clock = FakeClock()
    got = sustained_load(FakeSampler(loads, clock), sleep=clock.sleep, clock=clock)
    assert got == pytest.approx(expected) and clock.now <= most_s + 1e-9


@pytest.mark.parametrize("cores, jobs, others, expected", [
    (2, 1, 0.0, 2), (2, 1, 0.4, 2), (2, 1, 1.0, 1), (2, 1, 2.0, 1), (2, 2, 0.0, 1), (8, 2, 1.0, 3), (1, 3, 1.0, 1),
])
def test_threads_share_the_cores_and_give_way_to_other_processes(cores, jobs, others, expected):
    assert threads_for(cores, jobs, others) == expected


def _busy(seconds):
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def _machine_is_busy():
    return sustained_load(LoadSampler()) >= DROP_AT


@pytest.mark.skipif(physical_cores() < 2 or not os.path.exists("/proc/stat"), reason="needs 2 cores and /proc/stat")
def test_a_burst_of_other_work_at_start_does_not_lower_the_count_but_a_lasting_load_does(tmp_path):
    if _machine_is_busy():
        pytest.skip("other processes keep this machine busy: the quiet count cannot be checked")
    burst = _busy(1.5)
    try:
        tic = time.monotonic()
        env = {}
        choice = prepare_threads("train", environ=env, modules={}, slots=JobSlots(str(tmp_path / "a")))
        took = time.monotonic() - tic
    finally:
        burst.wait(timeout=30)
    assert choice.threads == physical_cores(), choice  # the burst ended: the long run keeps every core
    assert took < 3.5  # bounded
    lasting = _busy(8)
    try:
        time.sleep(0.3)
        lowered = prepare_threads("train", environ={}, modules={}, slots=JobSlots(str(tmp_path / "b")))
    finally:
        lasting.kill()
        lasting.wait()
    assert lowered.threads == physical_cores() - 1 and lowered.load_others >= DROP_AT, lowered


PAIR = """
import json, sys
from stn_gluon.cli.threads import JobSlots, prepare_threads
env = {}
choice = prepare_threads("train", environ=env, modules={}, slots=JobSlots(sys.argv[1]))
print(json.dumps([choice.threads, choice.why]))
"""


@pytest.mark.skipif(physical_cores() < 2, reason="needs 2 cores")
def test_two_trainings_started_together_share_the_cores(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", PAIR, str(tmp_path / "slots")], stdout=subprocess.PIPE,
                              text=True, env=clean_env()) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    shared = [count for count, why in results if "shared with 1 other training" in why]
    # the later one always counts the earlier; the earlier one does unless its decision came before the other's
    # start (possible on a loaded machine: a Python start-up delayed past the first look)
    assert shared and all(count <= physical_cores() // 2 for count in shared), results


def test_job_slots_count_live_holders_only(tmp_path):
    folder = str(tmp_path / "slots")
    mine = JobSlots(folder)
    mine.join()
    code = "import sys, json; from stn_gluon.cli.threads import JobSlots; print(json.dumps(JobSlots(sys.argv[1]).others()))"
    seen = json.loads(subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True,
                                     timeout=60).stdout)
    assert seen == [os.getpid()]
    assert JobSlots(folder).others() == [os.getpid()]  # this process's own other handle sees the lock too
    assert mine.held is not None
    mine.held.close()
    assert JobSlots(folder).others() == []
