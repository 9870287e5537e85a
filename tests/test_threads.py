"""MXNet's OpenMP thread count: when MXNet was imported before stn_gluon, the user's settings, and the count
chosen again before a job's first operator."""
import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys, warnings
warnings.simplefilter("error", RuntimeWarning)  # the package must not need to warn
if sys.argv[1] == "mxnet-first":
    exec(sys.argv[2])  # what a script must run before mxnet on numpy >= 1.24 (stn_gluon._runtime.compat), stn_gluon unimported
    assert "stn_gluon" not in sys.modules
    import mxnet as mx
    import stn_gluon
else:
    import stn_gluon
    import mxnet as mx
from stn_gluon._runtime.threads import mxnet_thread_limit
x = mx.nd.random.uniform(shape=(16, 8, 64, 64))
y = mx.nd.Convolution(x, mx.nd.ones((8, 8, 3, 3)), kernel=(3, 3), num_filter=8, no_bias=True)
y.wait_to_read()
if sys.argv[1] == "mxnet-first":  # a later change is verified too, and undone
    from stn_gluon._runtime.threads import set_mxnet_threads
    before = mxnet_thread_limit()
    assert set_mxnet_threads(before + 1) and mxnet_thread_limit() == before + 1
    assert set_mxnet_threads(before) and mxnet_thread_limit() == before
from stn_gluon._runtime.threads import thread_report
report = thread_report()
print(mxnet_thread_limit(), len(os.listdir("/proc/self/task")), int(report["adaptive"]),
      report["gomp_spincount"] or 0)
"""


def _probe(order, **user):
    from stn_gluon._runtime.compat import standalone_prelude

    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                        "STN_GLUON_ADAPT_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE, order, standalone_prelude()], env=dict(env, **user),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_mxnet_imported_first_gets_one_thread_per_core_without_a_warning():
    from stn_gluon._runtime.threads import physical_cores

    # no sampling of the load at start-up (other tests may keep a core busy; startup_threads is tested alone)
    first_limit, first_threads, first_adaptive, _ = _probe("mxnet-first", STN_GLUON_ADAPT_THREADS="0")
    usual_limit, usual_threads, usual_adaptive, spin = _probe("stn_gluon-first", STN_GLUON_ADAPT_THREADS="0")
    assert usual_limit == physical_cores()  # OMP_NUM_THREADS set before MXNet loaded
    assert first_limit == usual_limit  # set in the loaded library instead
    assert first_threads == usual_threads  # and the operators' OpenMP pool is the same size
    # libgomp's own spin (no GOMP_SPINCOUNT set); the count was not chosen from the load (switched off)
    assert spin == 0 and usual_adaptive == first_adaptive == 0


def test_the_users_own_openmp_settings_win():
    limit, _, adaptive, spin = _probe("stn_gluon-first", OMP_NUM_THREADS="3", GOMP_SPINCOUNT="777")
    assert (limit, adaptive, spin) == (3, 0, 777)


def test_a_count_below_one_is_refused():
    from stn_gluon._runtime.threads import set_mxnet_threads

    with pytest.raises(ValueError):
        set_mxnet_threads(0)


RECHECK_PROBE = """
import ctypes, importlib.util, os, sys
# stn_gluon._runtime.threads loaded ahead of the package, its load sampler replaced: the machine looks quiet at start-up,
# and busy by the time the job's first operator runs (what a training started beside another one sees)
spec = importlib.util.find_spec("stn_gluon")
path = os.path.join(os.path.dirname(spec.origin), "threads.py")
threads = importlib.util.module_from_spec(importlib.util.spec_from_file_location("stn_gluon._runtime.threads", path))
sys.modules["stn_gluon._runtime.threads"] = threads
threads.__spec__.loader.exec_module(threads)
others = {"cpus": 0.0}

class Sampler:
    cpus = [0, 1]

    def __init__(self, *args, **kwargs):
        pass

    def sample(self):
        return others["cpus"]
threads.LoadSampler = Sampler
threads.physical_cores = lambda cpus=None, sysfs=None: 2
import stn_gluon
import mxnet as mx
start = os.environ["OMP_NUM_THREADS"]
others["cpus"] = float(sys.argv[1])
got = threads.recheck_threads(most=int(sys.argv[2]) or None)
gomp = ctypes.CDLL("libgomp.so.1")
seen = []
callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
    lambda rctx, param: seen.append(gomp.omp_get_max_threads()))
ctx = (ctypes.c_int * 2)(1, 0)
assert mx.base._LIB.MXEnginePushSync(callback, None, None, ctypes.byref(ctx), None, 0, None, 0, None, 0, None) == 0
mx.nd.waitall()
others["cpus"] = 2.0
again = threads.recheck_threads()  # the engine has run an operator: nothing changes any more
print(start, got, seen[0], threads.mxnet_thread_limit(), again, os.environ["OMP_NUM_THREADS"])
print(threads.describe_threads())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
@pytest.mark.parametrize("busy, most, expected, how", [
    (2.0, 0, 1, "chosen before the first operator"),  # a training that started with another: one thread
    (0.0, 0, 2, "chosen at start-up"),                # still quiet: the count stays
    (0.0, 1, 1, "at most 1 for this job"),            # stn-gluon serve: one thread, quiet or not
])
def test_the_count_is_chosen_again_before_the_first_operator(busy, most, expected, how):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                        "STN_GLUON_ADAPT_THREADS", "MXNET_ENGINE_TYPE")}
    out = subprocess.run([sys.executable, "-c", RECHECK_PROBE, str(busy), str(most)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    numbers, line = out.stdout.splitlines()[0].split(), out.stdout.splitlines()[1]
    start, got, worker, limit, again, final = numbers
    assert start == "2"  # quiet at start-up: a thread per core
    # the operators' thread (oneDNN's count) and MXNet's own kernels agree on the new count
    assert int(got) == int(worker) == int(limit) == int(final) == expected
    assert again == "None"  # once operators ran, the count no longer changes
    assert line.startswith(f"CPU threads: {expected} ({how}")
