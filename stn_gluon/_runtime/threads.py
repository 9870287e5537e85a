"""The OpenMP thread count MXNet runs its CPU operators with: what it is, who chose it, one warning if it is bad.

MXNet (and the OpenMP runtime it links, libgomp) reads ``OMP_NUM_THREADS``
once, when it loads; the count cannot be changed afterwards through any public
API. So the package follows torchrun and Hugging Face Accelerate: the
*launchers* choose it before MXNet loads, the library only reads it.

* ``stn-gluon`` commands choose it for their own process before they import
  MXNet (:mod:`stn_gluon.cli.threads`), and ``stn-gluon launch`` for every
  process it starts (:func:`stn_gluon.train.distributed.launch_threads`).
  Each writes the count into ``OMP_NUM_THREADS`` and says so in
  :data:`CHOSEN_ENV` (:func:`mark_chosen`), so that a report can tell the
  user's own setting from theirs.
* From Python, set ``OMP_NUM_THREADS`` yourself before ``import mxnet``
  (for example to :func:`physical_cores`). Unset, MXNet 1.9 takes half the
  logical CPUs (it assumes two hyper-threads per core: one core of a 2-vCPU VM
  stays idle). ``import stn_gluon`` changes no environment variable.

:func:`thread_report` says what a process uses (training prints
:func:`describe_threads` and writes the report into ``metrics.json``);
:func:`check_threads` warns once, in one line, about a count that is not a
number or is more than the cores this process may use.
"""
import json
import os
import warnings
from typing import Any, Dict, Iterable, Mapping, MutableMapping, Optional

__all__ = ["physical_cores", "mxnet_default_threads", "CHOSEN_ENV", "BY_CLI", "BY_LAUNCH", "mark_chosen",
           "chosen_by", "user_setting", "user_environ", "USER_OMP_NUM_THREADS", "thread_report",
           "describe_threads", "check_threads", "OPENMP_ENV"]

#: Where ``stn-gluon`` records the count it chose: JSON ``{"threads", "by", "why", "load_others"}``. It counts
#: only while ``OMP_NUM_THREADS`` still holds that count (anything else is the user's).
CHOSEN_ENV = "STN_GLUON_THREADS_CHOSEN"
#: Who chose it: a ``stn-gluon`` command for its own process, or ``stn-gluon launch`` for the process it started.
BY_CLI = "stn_gluon"
BY_LAUNCH = "stn-gluon launch"
#: The OpenMP settings a report shows.
OPENMP_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


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
    """The OpenMP threads MXNet 1.9 picks on its own on x86 when ``OMP_NUM_THREADS`` is unset (half the CPUs)."""
    return max(1, (os.cpu_count() or 1) // 2)


def mark_chosen(environ: MutableMapping[str, str], threads: int, by: str, why: str,
                load_others: Optional[float] = None) -> None:
    """Set ``OMP_NUM_THREADS`` to ``threads`` in ``environ`` and record who chose it and why (:data:`CHOSEN_ENV`)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    environ["OMP_NUM_THREADS"] = str(threads)
    environ[CHOSEN_ENV] = json.dumps(dict(threads=threads, by=by, why=why, load_others=load_others))


def chosen_by(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """The record of :func:`mark_chosen` where ``OMP_NUM_THREADS`` still holds its count; ``None`` otherwise."""
    environ = os.environ if environ is None else environ
    try:
        record = json.loads(environ.get(CHOSEN_ENV, ""))
    except ValueError:
        return None
    if not isinstance(record, dict) or str(record.get("threads")) != environ.get("OMP_NUM_THREADS"):
        return None
    return record


def user_setting(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """``OMP_NUM_THREADS`` as the user set it (``None``: unset, or chosen by ``stn-gluon``)."""
    environ = os.environ if environ is None else environ
    if chosen_by(environ) is not None:
        return None
    return environ.get("OMP_NUM_THREADS") or None


def user_environ(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """A copy of ``environ`` (default: ``os.environ``) without the count ``stn-gluon`` chose: what a user's own
    script started from here would see (the user's own ``OMP_NUM_THREADS`` stays)."""
    env = dict(os.environ if environ is None else environ)
    if chosen_by(env) is not None:
        env.pop("OMP_NUM_THREADS", None)
    env.pop(CHOSEN_ENV, None)
    return env


#: ``OMP_NUM_THREADS`` as the user had set it when this module was imported (``None``: unset or stn-gluon's).
USER_OMP_NUM_THREADS = user_setting()


def thread_report(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """What this process uses: the operators' thread count ``threads_now``, ``omp_num_threads`` and who set it
    (``omp_num_threads_from``: ``"user"``, :data:`BY_CLI`, :data:`BY_LAUNCH` or ``None``: unset, MXNet's
    default), why (``chosen``), ``adaptive`` (chosen from the load other processes put on the machine) and that
    load (``load_others``, CPUs), the spin settings, and ``cores``."""
    env = os.environ if environ is None else environ
    record = chosen_by(env)
    value = env.get("OMP_NUM_THREADS") or None
    if record is not None:
        source, why = record.get("by"), record.get("why")
    elif value is not None:
        source, why = "user", f"OMP_NUM_THREADS={value} set by the user"
    else:
        source, why = None, f"OMP_NUM_THREADS unset: MXNet's default, half the {os.cpu_count()} logical CPUs"
    load = record.get("load_others") if record is not None else None
    try:
        now = int(value) if value is not None else mxnet_default_threads()
    except ValueError:
        now = mxnet_default_threads()
    return dict(omp_num_threads=value, omp_num_threads_from=source, chosen=why, threads_now=max(1, now),
                adaptive=load is not None, load_others=load, cores=physical_cores(),
                omp_wait_policy=env.get("OMP_WAIT_POLICY"), gomp_spincount=env.get("GOMP_SPINCOUNT"),
                spin_from="user" if ("OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env) else "libgomp default")


def describe_threads(report: Optional[Mapping[str, Any]] = None) -> str:
    """One line for a run's output: the threads in use and why."""
    r = thread_report() if report is None else report
    if r["omp_wait_policy"] or r["gomp_spincount"]:
        spin = (f"OMP_WAIT_POLICY={r['omp_wait_policy']}" if r["omp_wait_policy"] else
                f"GOMP_SPINCOUNT={r['gomp_spincount']}") + f" ({r['spin_from']})"
    else:
        spin = "libgomp's default spin"
    return f"CPU threads: {r['threads_now']} ({r['chosen']}); {spin}"


_WARNED: set = set()  # the settings warned about already (one warning each, per process)


def check_threads(environ: Optional[Mapping[str, str]] = None, most: Optional[int] = None) -> Optional[str]:
    """Warn once (one line, :class:`RuntimeWarning`) where ``OMP_NUM_THREADS`` is not a whole number >= 1, is more
    than the physical cores this process may use, or (not set by the user) gives more than ``most`` threads to a
    job meant to run with that many; returns the warning (``None``: the setting is fine)."""
    env = os.environ if environ is None else environ
    value = env.get("OMP_NUM_THREADS") or None
    cores = physical_cores()
    try:
        count = int(value) if value is not None else mxnet_default_threads()
    except ValueError:
        count = 0
    if count < 1:
        message = f"OMP_NUM_THREADS={value!r} is not a whole number >= 1; MXNet ignores it (set 1 to {cores})"
    elif value is not None and count > cores:
        message = (f"OMP_NUM_THREADS={value} is more than the {cores} cores this process may use: its threads wait "
                   f"for each other at every operator; set it to {cores} or fewer")
    elif most is not None and count > most and user_setting(env) is None:
        message = (f"MXNet runs this job's operators on {count} threads ({thread_report(env)['chosen']}), meant for "
                   f"at most {most}; set OMP_NUM_THREADS={most} before MXNet loads")
    else:
        return None
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message
