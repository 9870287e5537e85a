"""CPU thread settings, applied when ``stn_gluon`` is imported (before MXNet is).

MXNet 1.9 sizes its OpenMP pool, when ``OMP_NUM_THREADS`` is not set, as
half the processors it sees on x86, assuming that every core is two
hyper-threads. On a machine without SMT (most small cloud VMs: 2 vCPUs that
are 2 cores) that leaves one core idle: every operator of a training step ran
on one thread here (1.1 cores busy), 1.4x slower than with both.
:func:`configure_openmp` sets ``OMP_NUM_THREADS`` to the number of physical
cores this process may use, unless the user has set it; it must run before
``mxnet`` is first imported, which ``import stn_gluon`` does for you.

When MXNet was imported first, :func:`set_mxnet_threads` sets the count in
the loaded library instead. MXNet's C API ``MXSetNumOMPThreads`` alone is not
enough: it sets only the calling thread's OpenMP count, while the engine's
worker threads, which run the operators, take theirs (when they start, on a
device's first operator) capped by the limit MXNet computed when it loaded
(``mxnet::engine::OpenMP``'s thread maximum, half the processors). That limit
is raised too, through the library's exported ``OpenMP::Get()``, and checked
through its exported ``GetRecommendedOMPThreadCount``: any mismatch leaves
everything as it was.

On a busy machine (issue 19) a pool of one OpenMP thread per core collapses:
libgomp's threads spin at every barrier while their partner thread waits for
a core, so a trainer beside one busy process ran at a third of its quiet
speed, and two trainers at once at a twelfth. So the count follows the load
a job starts into:

* :func:`configure_openmp` samples ``/proc/stat`` for 100 ms before MXNet
  loads, counts the cores that *other* processes keep busy, and gives MXNet
  one OpenMP thread fewer per core taken (:func:`startup_threads`);
* right before a job's first operator, :func:`recheck_threads` looks again,
  at the whole time since start-up (``fit``, ``fit_module`` and
  ``stn-gluon predict`` call it; ``stn-gluon serve`` calls it with one thread at most): two trainings
  launched together may sleep through each other's 100 ms sample, but not
  through each other's seconds of importing MXNet and loading data. It only
  lowers the count, and it sets it inside MXNet's CPU worker thread (which
  runs the operators, oneDNN's included) before anything is built, so every
  oneDNN primitive is created and run with the same count.

libgomp's own spin (300,000 turns before a waiting thread sleeps) stays: a
shorter one (10,000 turns) cost 8-14 % of quiet training speed in three runs,
and a third of quiet MXNet serving speed in one, and did not save a
two-thread job whose load came later (0.29x of quiet with 10,000 turns
against 0.11x with libgomp's).

The count is never changed once MXNet has run operators: oneDNN's primitives
keep the thread count they were created with, and changing the count later in
MXNet's engine worker thread (a governor that followed the load, tried for
issue 19) corrupted memory (``malloc(): unaligned tcache chunk``,
segmentation faults) in the contention benchmark.

An explicit ``OMP_NUM_THREADS`` from the user always holds (no sampling), as
does ``STN_GLUON_ADAPT_THREADS=0`` (one thread per core, whatever the load).
:func:`thread_report` says what was chosen; training prints it and writes
it into ``metrics.json``.
"""
import ctypes
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

__all__ = ["physical_cores", "configure_openmp", "mxnet_default_threads", "set_mxnet_threads", "adjust_loaded_mxnet",
           "mxnet_thread_limit", "USER_OMP_NUM_THREADS", "user_environ", "cpu_busy_seconds",
           "LoadSampler", "threads_for_load", "startup_threads", "thread_report", "describe_threads", "ADAPT_ENV",
           "mark_imported", "recheck_threads"]

#: ``OMP_NUM_THREADS`` as the user set it, read before :func:`configure_openmp` ran (``None``: unset).
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
#: The OpenMP settings the user gave (read at import, before this module set any).
USER_OPENMP = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
#: ``STN_GLUON_ADAPT_THREADS=0``: one thread per core whatever the load (no sampling at start-up).
ADAPT_ENV = "STN_GLUON_ADAPT_THREADS"

_OPENMP_GET = "_ZN5mxnet6engine6OpenMP3GetEv"  # mxnet::engine::OpenMP::Get()
_OPENMP_RECOMMENDED = "_ZNK5mxnet6engine6OpenMP28GetRecommendedOMPThreadCountEb"
_THREAD_MAX_OFFSET = 4  # class OpenMP { volatile bool enabled_; volatile int omp_thread_max_; ... }


def physical_cores(cpus: Optional[Iterable[int]] = None, sysfs: str = "/sys/devices/system/cpu") -> int:
    """Distinct physical cores among the logical CPUs ``cpus`` (default: this process's affinity).

    Hyper-thread siblings count once (read from ``sysfs`` topology); where the
    topology cannot be read, every logical CPU counts as a core.
    """
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            with open(os.path.join(sysfs, f"cpu{cpu}", "topology", "thread_siblings_list")) as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(f"cpu{cpu}")
    return max(1, len(cores))


def mxnet_default_threads() -> int:
    """The OpenMP threads MXNet 1.9 picks on its own on x86 (half the processors it sees)."""
    return max(1, (os.cpu_count() or 1) // 2)


def configure_openmp(environ: Optional[MutableMapping[str, str]] = None,
                     modules: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """Set ``OMP_NUM_THREADS`` unless it is set already: one thread per physical core, less one per core other
    processes keep busy (:func:`startup_threads`; the load is sampled only for this process's own environment).

    Returns the value now in effect, or ``None`` when MXNet was imported
    before this ran (too late to change its pool; nothing is changed then).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if environ.get("OMP_NUM_THREADS"):
        return environ["OMP_NUM_THREADS"]
    if "mxnet" in modules:
        return None
    cores = physical_cores()
    environ["OMP_NUM_THREADS"] = str(startup_threads(cores) if environ is os.environ else cores)
    return environ["OMP_NUM_THREADS"]


def _openmp_object() -> Tuple[Any, int, Any]:
    """``(lib, this, recommended)`` of the loaded MXNet's OpenMP settings object."""
    import mxnet as mx

    lib = mx.base._LIB
    get = getattr(lib, _OPENMP_GET)
    get.restype, get.argtypes = ctypes.c_void_p, []
    recommended = getattr(lib, _OPENMP_RECOMMENDED)
    recommended.restype, recommended.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_bool]
    this = get()
    if not this:
        raise OSError("mxnet::engine::OpenMP::Get() returned NULL")
    return lib, this, recommended


def mxnet_thread_limit() -> int:
    """The most OpenMP threads the loaded MXNet gives an operator (its engine's thread maximum)."""
    _, this, _ = _openmp_object()
    return ctypes.c_int.from_address(this + _THREAD_MAX_OFFSET).value


def set_mxnet_threads(count: int) -> bool:
    """Give operators of an already-loaded MXNet ``count`` OpenMP threads; True when done and verified.

    Calls ``MXSetNumOMPThreads(count)`` (this thread's count) and raises the
    engine's thread maximum to ``count``. Takes effect for the engine threads
    that start afterwards: those of a device that has not run an operator yet
    (after ``import mxnet; import stn_gluon``, every one). Returns False, and
    changes nothing, where the library does not look as expected.
    """
    count = int(count)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    try:
        lib, this, recommended = _openmp_object()
        if lib.MXSetNumOMPThreads(ctypes.c_int(count)) != 0:
            return False
        limit = ctypes.c_int.from_address(this + _THREAD_MAX_OFFSET)
        old = limit.value
        # what MXNet recommends is min(this thread's count, its maximum): the field must read as that maximum
        if old < 1 or recommended(this, False) != min(count, old):
            return False
        limit.value = count
        if recommended(this, False) != count:
            limit.value = old
            return False
        return True
    except (AttributeError, OSError, ImportError):
        return False


def adjust_loaded_mxnet(environ: Optional[Mapping[str, str]] = None,
                        modules: Optional[Mapping[str, Any]] = None) -> Union[int, None, bool]:
    """Where MXNet was imported before this package with ``OMP_NUM_THREADS`` unset, set its thread count.

    Returns the count set, ``None`` where nothing needed doing, or ``False``
    where MXNet may use fewer threads than cores and it could not be changed.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if environ.get("OMP_NUM_THREADS") or "mxnet" not in modules:
        return None
    cores = physical_cores()
    if cores <= mxnet_default_threads():
        return None
    return cores if set_mxnet_threads(cores) else False


def user_environ(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """A copy of ``environ`` (default: ``os.environ``) with ``OMP_NUM_THREADS`` as the user had set it.

    For a child process that should run as the user's own code would: without
    the ``OMP_NUM_THREADS`` that :func:`configure_openmp` set in this one.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("OMP_NUM_THREADS", None)
    if "OMP_NUM_THREADS" in USER_OPENMP:
        env["OMP_NUM_THREADS"] = USER_OPENMP["OMP_NUM_THREADS"]
    return env


def cpu_busy_seconds(cpus: Optional[Sequence[int]] = None, stat: str = "/proc/stat") -> Tuple[float, float]:
    """``(busy, total)`` CPU seconds since boot of the logical CPUs ``cpus`` (default: this process's affinity).

    Busy is everything but ``idle`` and ``iowait`` (``steal`` counts as busy:
    the hypervisor gave that time to someone else). Raises ``OSError`` where
    ``/proc/stat`` cannot be read.
    """
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0))
    wanted = {f"cpu{c}" for c in cpus}
    busy = total = 0
    with open(stat) as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in wanted:
                ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return busy / hz, total / hz


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class LoadSampler:
    """How many CPUs *other* processes kept busy since the last :meth:`sample` (among this process's CPUs).

    busy(all processes) - this process's own CPU time, over the wall time
    between two samples; an OpenMP thread of this process that spins counts
    as its own, not as load.
    """

    def __init__(self, cpus: Optional[Sequence[int]] = None, stat: str = "/proc/stat",
                 own: Callable[[], float] = _own_cpu_seconds):
        self.cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
        self.stat, self.own = stat, own
        self._last = self._read()

    def _read(self) -> Tuple[float, float, float]:
        busy, total = cpu_busy_seconds(self.cpus, self.stat)
        return busy, total, self.own()

    def sample(self) -> float:
        """CPUs kept busy by other processes since the previous sample (0 .. ``len(cpus)``)."""
        (busy0, total0, own0), (busy1, total1, own1) = self._last, self._read()
        self._last = (busy1, total1, own1)
        wall = (total1 - total0) / max(1, len(self.cpus))
        if wall <= 0:
            return 0.0
        return min(float(len(self.cpus)), max(0.0, (busy1 - busy0 - (own1 - own0)) / wall))


#: Drop a thread once other processes keep this much of a core busy beyond the cores already given up ...
DROP_AT = 0.3
#: ... and take it back only when they use less than this much.
RAISE_AT = 0.15


def threads_for_load(limit: int, others: float, current: int, cpus: Optional[int] = None) -> int:
    """OpenMP threads to use when other processes keep ``others`` logical CPUs busy.

    limit: the most threads (one per physical core); cpus: the logical CPUs
    this process may use (default ``limit``; on SMT machines ``others`` is
    scaled to cores). Gives up one thread per core the others take, with
    hysteresis: lower once they take more than :data:`DROP_AT` of a further
    core, raise once they leave more than ``1 -`` :data:`RAISE_AT` of it.
    Returns 1 .. ``limit``.
    """
    cores_taken = max(0.0, others) * limit / (cpus or limit)
    low = limit - math.ceil(cores_taken - DROP_AT)
    high = limit - math.ceil(cores_taken - RAISE_AT)
    new = low if low < current else (high if high > current else current)
    return max(1, min(limit, new))


#: Seconds over which :func:`startup_threads` samples the load.
STARTUP_SAMPLE_S = 0.1
#: Other processes' CPUs seen by :func:`startup_threads` or :func:`recheck_threads` (``None``: not sampled).
_load_at_start: Optional[float] = None
#: What :func:`recheck_threads` reads: the load since start-up (a sampler started then) and when that was.
_since_start: Optional["LoadSampler"] = None
_started_at = 0.0
#: This process's threads once ``stn_gluon`` is imported (:func:`mark_imported`); MXNet's engine starts its
#: worker threads with its first operator, after which the thread count can no longer change.
_tasks_at_import: Optional[int] = None
#: Seconds of load :func:`recheck_threads` looks at, at least.
RECHECK_WINDOW_S = 0.5
#: How the count was chosen, for :func:`describe_threads` (set by :func:`recheck_threads`).
_chosen_how = "chosen at start-up"


def _adapt_off_reason(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    environ = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in USER_OPENMP:
        return f"OMP_NUM_THREADS={USER_OPENMP['OMP_NUM_THREADS']} set by the user"
    if environ.get(ADAPT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ADAPT_ENV}={environ[ADAPT_ENV]}"
    if environ.get("MXNET_ENGINE_TYPE", "").startswith("Naive"):
        return "MXNET_ENGINE_TYPE=NaiveEngine (operators run in the calling thread)"
    if not os.path.exists("/proc/stat") or not hasattr(os, "sched_getaffinity"):
        return "no /proc/stat to read the load from"
    return None


def startup_threads(limit: int, sample_s: float = STARTUP_SAMPLE_S) -> int:
    """OpenMP threads for MXNet in a process starting now: ``limit`` (one per physical core) less one per core
    other processes keep busy over ``sample_s`` seconds (:func:`threads_for_load`); ``limit`` where sampling is
    off (``STN_GLUON_ADAPT_THREADS=0``, the NaiveEngine, no ``/proc/stat``) or there is one core. Called before
    MXNet loads; the count is not changed afterwards (see the module docs)."""
    global _load_at_start
    if limit < 2 or _adapt_off_reason() is not None:
        return limit
    global _since_start, _started_at
    try:
        sampler = LoadSampler()
        _since_start, _started_at = LoadSampler(), time.monotonic()
        time.sleep(sample_s)
        others = sampler.sample()
    except OSError:
        return limit
    _load_at_start = round(others, 2)
    return threads_for_load(limit, others, limit, len(sampler.cpus))


def _task_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def mark_imported() -> None:
    """Note this process's thread count now (``stn_gluon``'s import calls it): :func:`recheck_threads` works
    only while MXNet's engine has started no threads since."""
    global _tasks_at_import
    _tasks_at_import = _task_count()


_SYNC_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


def _set_worker_threads(count: int, devices: Sequence[int]) -> bool:
    """Set the OpenMP count inside MXNet's CPU worker thread of each of ``devices`` (``cpu(i)``); waits for it.

    OpenMP's count is per thread, and the worker thread, not this one, runs
    the operators (oneDNN reads its count there when it builds a primitive):
    a function that calls ``omp_set_num_threads`` is pushed to each device's
    engine queue (``MXEnginePushSync``). Only before the first operator: see
    :func:`recheck_threads`.
    """
    import mxnet as mx

    gomp = ctypes.CDLL("libgomp.so.1")  # the libgomp MXNet loaded (same soname)
    done: List[int] = []

    def run(rctx: object, param: object) -> None:
        gomp.omp_set_num_threads(count)
        done.append(gomp.omp_get_max_threads())
    callback = _SYNC_FUNC(run)
    for device in devices:
        ctx = (ctypes.c_int * 2)(1, int(device))  # Context{kCPU, device}
        if mx.base._LIB.MXEnginePushSync(callback, None, None, ctypes.byref(ctx), None, 0, None, 0, None, 0,
                                         None) != 0:
            return False
    mx.nd.waitall()
    return len(done) == len(devices) and set(done) == {count}


def recheck_threads(devices: Sequence[int] = (0,), most: Optional[int] = None,
                    min_window_s: float = RECHECK_WINDOW_S) -> Optional[int]:
    """Choose the OpenMP thread count again right before a job's first MXNet operator, from the CPUs other
    processes kept busy since start-up; returns the count now in effect (``None``: nothing was checked).

    devices: the ``cpu(i)`` contexts the job runs on; most: a cap for this
    kind of job (``stn-gluon serve``: 1). ``fit`` and ``fit_module`` call it
    first thing. The 100 ms sample at import (:func:`startup_threads`) can
    miss a training started at the same moment (both sleep through each
    other's sample); seconds later, each has seen the other import MXNet.
    Only lowers the count, inside MXNet's CPU worker threads and before any
    operator has run, so every oneDNN primitive is built and run with the new
    count. Does nothing where the count was not chosen from the load
    (``OMP_NUM_THREADS`` set by the user, sampling off, MXNet imported before
    ``stn_gluon``) or once MXNet's engine has started threads.
    """
    global _load_at_start, _chosen_how
    if (_since_start is None or _adapt_off_reason() is not None or _tasks_at_import is None
            or _task_count() != _tasks_at_import):
        return None
    wait = min_window_s - (time.monotonic() - _started_at)
    if wait > 0:
        time.sleep(wait)
    try:
        others = _since_start.sample()
    except OSError:
        return None
    current = int(os.environ.get("OMP_NUM_THREADS") or mxnet_default_threads())
    for_load = threads_for_load(physical_cores(), others, current, len(_since_start.cpus))
    wanted = min(for_load, most) if most else for_load
    _load_at_start = max(_load_at_start or 0.0, round(others, 2))
    if wanted < current and set_mxnet_threads(wanted):
        if _set_worker_threads(wanted, devices):
            os.environ["OMP_NUM_THREADS"] = str(wanted)
            _chosen_how = (f"at most {most} for this job" if wanted < for_load
                           else "chosen before the first operator")
        else:  # all or nothing: MXNet's own kernels and oneDNN's keep one count
            set_mxnet_threads(current)
    return int(os.environ.get("OMP_NUM_THREADS") or current)


def thread_report() -> dict:
    """What this process uses: ``omp_num_threads`` (and who set it), wait policy / spin count, and the load.

    ``threads_now`` is the operators' thread count; ``adaptive`` whether it
    was chosen from the load at start-up (``adaptive_off`` says why not);
    ``load_others`` the CPUs other processes kept busy then.
    """
    env = os.environ
    adaptive = _load_at_start is not None and "OMP_NUM_THREADS" not in USER_OPENMP
    report = dict(omp_num_threads=env.get("OMP_NUM_THREADS"),
                  omp_num_threads_from="user" if "OMP_NUM_THREADS" in USER_OPENMP else "stn_gluon",
                  omp_wait_policy=env.get("OMP_WAIT_POLICY"), gomp_spincount=env.get("GOMP_SPINCOUNT"),
                  spin_from="user" if ("OMP_WAIT_POLICY" in USER_OPENMP or "GOMP_SPINCOUNT" in USER_OPENMP)
                  else "libgomp default",
                  cores=physical_cores(), adaptive=adaptive,
                  threads_now=int(env.get("OMP_NUM_THREADS") or mxnet_default_threads()),
                  load_others=_load_at_start if adaptive else None, chosen=_chosen_how)
    if not adaptive:
        report["adaptive_off"] = _adapt_off_reason() or ("one core" if physical_cores() < 2 else
                                                         "mxnet was imported before stn_gluon")
    return report


def describe_threads(report: Optional[dict] = None) -> str:
    """One line for a run's output: the threads in use and why."""
    r = report or thread_report()
    if r["omp_wait_policy"] or r["gomp_spincount"]:
        spin = (f"OMP_WAIT_POLICY={r['omp_wait_policy']}" if r["omp_wait_policy"] else
                f"GOMP_SPINCOUNT={r['gomp_spincount']}") + f" ({r['spin_from']})"
    else:
        spin = "libgomp's default spin"
    if r["adaptive"]:
        return (f"CPU threads: {r['threads_now']} ({r.get('chosen', 'chosen at start-up')}: {r['cores']} cores, other "
                f"processes busy on "
                f"{r['load_others']:.1f} CPUs; set OMP_NUM_THREADS to fix the count); {spin}")
    return f"CPU threads: {r['omp_num_threads'] or r['threads_now']} ({r['adaptive_off']}); {spin}"
