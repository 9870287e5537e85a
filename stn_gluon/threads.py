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
"""
import ctypes
import os
import sys

__all__ = ["physical_cores", "configure_openmp", "mxnet_default_threads", "set_mxnet_threads", "adjust_loaded_mxnet",
           "mxnet_thread_limit", "USER_OMP_NUM_THREADS", "user_environ"]

#: ``OMP_NUM_THREADS`` as the user set it, read before :func:`configure_openmp` ran (``None``: unset).
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")

_OPENMP_GET = "_ZN5mxnet6engine6OpenMP3GetEv"  # mxnet::engine::OpenMP::Get()
_OPENMP_RECOMMENDED = "_ZNK5mxnet6engine6OpenMP28GetRecommendedOMPThreadCountEb"
_THREAD_MAX_OFFSET = 4  # class OpenMP { volatile bool enabled_; volatile int omp_thread_max_; ... }


def physical_cores(cpus=None, sysfs="/sys/devices/system/cpu"):
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


def mxnet_default_threads():
    """The OpenMP threads MXNet 1.9 picks on its own on x86 (half the processors it sees)."""
    return max(1, (os.cpu_count() or 1) // 2)


def configure_openmp(environ=None, modules=None):
    """Set ``OMP_NUM_THREADS`` to the physical core count unless it is set already.

    Returns the value now in effect, or ``None`` when MXNet was imported
    before this ran (too late to change its pool; nothing is changed then).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if environ.get("OMP_NUM_THREADS"):
        return environ["OMP_NUM_THREADS"]
    if "mxnet" in modules:
        return None
    environ["OMP_NUM_THREADS"] = str(physical_cores())
    return environ["OMP_NUM_THREADS"]


def _openmp_object():
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


def adjust_loaded_mxnet(environ=None, modules=None):
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


def user_environ(environ=None) -> dict:
    """A copy of ``environ`` (default: ``os.environ``) with ``OMP_NUM_THREADS`` as the user had set it.

    For a child process that should run as the user's own code would: without
    the ``OMP_NUM_THREADS`` that :func:`configure_openmp` set in this one.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("OMP_NUM_THREADS", None)
    if USER_OMP_NUM_THREADS is not None:
        env["OMP_NUM_THREADS"] = USER_OMP_NUM_THREADS
    return env
