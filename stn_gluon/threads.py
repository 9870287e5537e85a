"""CPU thread settings, applied when ``stn_gluon`` is imported (before MXNet is).

MXNet 1.9 sizes its OpenMP pool, when ``OMP_NUM_THREADS`` is not set, as
half the processors it sees on x86, assuming that every core is two
hyper-threads. On a machine without SMT (most small cloud VMs: 2 vCPUs that
are 2 cores) that leaves one core idle: every operator of a training step ran
on one thread here (1.1 cores busy), 1.4x slower than with both.
:func:`configure_openmp` sets ``OMP_NUM_THREADS`` to the number of physical
cores this process may use, unless the user has set it; it must run before
``mxnet`` is first imported, which ``import stn_gluon`` does for you.
"""
import os
import sys

__all__ = ["physical_cores", "configure_openmp", "mxnet_default_threads"]


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
