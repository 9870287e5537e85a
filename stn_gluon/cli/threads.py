"""The OpenMP thread count of a ``stn-gluon`` process, chosen before MXNet loads.

MXNet reads ``OMP_NUM_THREADS`` once, when it loads, so :func:`stn_gluon.cli.main`
calls :func:`prepare_threads` before anything imports ``mxnet`` (as torchrun
and Accelerate set it for the processes they start). The rules, in order:

1. ``OMP_NUM_THREADS`` set by the user, or by ``stn-gluon launch`` for this
   process, holds. Nothing is sampled.
2. ``launch`` chooses nothing for itself (it runs no operator; it divides the
   cores among the processes it starts); ``serve`` takes one thread (a
   server's small batches gain nothing steady from a second one, and keep
   their speed beside a busy process).
3. ``train`` and ``train-symbol``: one thread per physical core of this
   process's affinity, shared with the other trainings of ``stn-gluon`` that
   run on the machine (:class:`JobSlots`), less one per core *other*
   processes keep busy (:func:`sustained_load`): a load seen at start counts
   only if it is still there :data:`CONFIRM_S` seconds later, so a burst of a
   second or two does not halve a long run.
4. Every other command: one thread per physical core.

The count is recorded with :func:`stn_gluon._runtime.threads.mark_chosen`;
training prints it (``CPU threads: ...``) and writes it into ``metrics.json``.
"""
import fcntl
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Callable, List, Mapping, MutableMapping, Optional, Sequence, Tuple

from .._runtime.threads import BY_CLI, chosen_by, mark_chosen, physical_cores

__all__ = ["prepare_threads", "Choice", "LoadSampler", "sustained_load", "threads_for", "JobSlots",
           "command_of", "cpu_busy_seconds", "process_cpu_seconds", "QUICK_S", "CONFIRM_S", "DROP_AT",
           "TRAIN_COMMANDS", "SUBGRAPH_ENV"]

#: The commands that train: they sample the load and share the cores with each other.
TRAIN_COMMANDS = ("train", "train-symbol")
#: Seconds of the first look at the load (counted from the start of ``main``, so mostly spent parsing).
QUICK_S = 0.25
#: A load seen at start must still be there this many seconds later to lower the count (a bound: no more waiting).
CONFIRM_S = 2.5
#: Seconds between looks while confirming.
STEP_S = 0.25
#: Other processes keeping this much of a core busy take that core.
DROP_AT = 0.5
#: MXNet prints every subgraph it partitions unless this is 0 (set here if unset; ``import stn_gluon`` sets none).
SUBGRAPH_ENV = "MXNET_SUBGRAPH_VERBOSE"


def command_of(argv: Sequence[str]) -> Optional[str]:
    """The subcommand of a ``stn-gluon`` argv (its first word not an option), ``None`` if none or help."""
    if any(a in ("-h", "--help") for a in argv):
        return None
    return next((a for a in argv if not a.startswith("-")), None)


def cpu_busy_seconds(cpus: Sequence[int], stat: str = "/proc/stat") -> Tuple[float, float]:
    """``(busy, total)`` CPU seconds since boot of the logical CPUs ``cpus``; busy excludes idle and iowait.

    Raises ``OSError`` where ``stat`` cannot be read.
    """
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


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 where it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class LoadSampler:
    """How many CPUs *other* processes kept busy since the previous :meth:`sample` (among ``cpus``).

    busy(all processes) minus this process's own CPU time (and that of
    ``own``: e.g. the other trainings counted as jobs), over the wall time.
    """

    def __init__(self, cpus: Optional[Sequence[int]] = None, stat: str = "/proc/stat",
                 own: Callable[[], float] = _own_cpu_seconds):
        self.cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
        self.stat, self.own = stat, own
        self.started = time.monotonic()
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


def sustained_load(sampler: LoadSampler, quick_s: float = QUICK_S, confirm_s: float = CONFIRM_S,
                   step_s: float = STEP_S, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> float:
    """The CPUs other processes keep busy, counted only where the load lasts.

    A first look over ``quick_s`` seconds since the sampler was made. Below
    :data:`DROP_AT`: 0 at once. Otherwise looks again every ``step_s``
    seconds for ``confirm_s`` seconds at most: as soon as one look finds the
    machine free, the load was a burst (0); still there at the end, the last
    look's figure. Bounded: at most ``quick_s + confirm_s`` seconds.
    """
    wait = quick_s - (clock() - sampler.started)
    if wait > 0:
        sleep(wait)
    others = sampler.sample()
    deadline = clock() + confirm_s
    while others >= DROP_AT and clock() < deadline:
        sleep(max(0.0, min(step_s, deadline - clock())))
        others = sampler.sample()
        if others < DROP_AT:
            return 0.0
    return others if others >= DROP_AT else 0.0


def threads_for(cores: int, jobs: int, others: float) -> int:
    """Threads of one of ``jobs`` trainings sharing ``cores`` cores, less a core per core ``others`` CPUs take."""
    taken = math.ceil(others - DROP_AT) if others >= DROP_AT else 0
    return max(1, cores // max(1, jobs) - taken)


class JobSlots:
    """The ``stn-gluon`` trainings running on this machine (this user's): each holds a lock on one slot file.

    The kernel drops a lock when its process ends, however it ends, so a count
    is never stale. Used so that trainings started at the same moment share
    the cores (each would otherwise see the other only as a burst of start-up).
    """

    SLOTS = 64

    def __init__(self, folder: Optional[str] = None):
        self.folder = folder or os.path.join(tempfile.gettempdir(), f"stn-gluon-jobs-{os.getuid()}")
        self.held: Optional[IO[str]] = None

    def _scan(self, take: bool) -> List[int]:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        others: List[int] = []
        with open(os.path.join(self.folder, "scan.lock"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # one scan at a time: a probe is not mistaken for a job
            for i in range(self.SLOTS):
                path = os.path.join(self.folder, f"slot-{i}")
                if self.held is not None and self.held.name == path:
                    continue
                f = open(path, "a+")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.seek(0)
                    text = f.read().strip()
                    others.append(int(text) if text.isdigit() else 0)
                    f.close()
                    continue
                if take and self.held is None:
                    f.truncate(0)
                    f.write(str(os.getpid()))
                    f.flush()
                    self.held = f
                else:
                    f.close()
        return others

    def join(self) -> None:
        """Take a slot for this process (held until it ends)."""
        self._scan(take=True)

    def others(self) -> List[int]:
        """The process ids of the other trainings holding a slot."""
        return self._scan(take=False)


@dataclass
class Choice:
    """What :func:`prepare_threads` chose: ``threads`` (``None``: left as it was), why, and the load seen."""
    threads: Optional[int]
    why: str
    load_others: Optional[float] = None
    slots: Optional[JobSlots] = None  # held for the life of the process


def prepare_threads(command: Optional[str], environ: Optional[MutableMapping[str, str]] = None,
                    modules: Optional[Mapping[str, object]] = None, sampler: Optional[LoadSampler] = None,
                    slots: Optional[JobSlots] = None) -> Choice:
    """Choose the OpenMP thread count of this ``stn-gluon`` ``command`` and set it in ``environ`` (default:
    ``os.environ``), before MXNet loads (see the module's rules). Also sets ``MXNET_SUBGRAPH_VERBOSE=0`` if unset.

    sampler: made when ``main`` started (the first look at the load then
    covers the parsing); slots: the registry of trainings (:class:`JobSlots`).
    Changes nothing where MXNet is loaded already (too late to matter).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "mxnet" in modules:
        return Choice(None, "mxnet was loaded before the thread count could be chosen")
    environ.setdefault(SUBGRAPH_ENV, "0")
    record = chosen_by(environ)
    if environ.get("OMP_NUM_THREADS") and (record is None or record.get("by") != BY_CLI):
        who = "the user" if record is None else record.get("by")
        return Choice(None, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']} set by {who}")
    if command is None or command == "launch":
        if record is not None:  # a stn-gluon parent's own count is no setting of this process
            environ.pop("OMP_NUM_THREADS", None)
        return Choice(None, "no operators run in this process")
    cores = physical_cores()
    if command == "serve":
        return _set(environ, Choice(1, "one thread for serving"))
    if command not in TRAIN_COMMANDS or cores < 2 or not os.path.exists("/proc/stat"):
        return _set(environ, Choice(cores, f"one per core, {cores} core{'s' if cores > 1 else ''}"))
    slots = slots or JobSlots()
    try:
        slots.join()
        sampler = sampler or LoadSampler()
        time.sleep(max(0.0, sampler.started + QUICK_S - time.monotonic()))  # trainings started with this one join
        jobs = slots.others()
        if jobs:  # from now on the other trainings count as jobs sharing the cores, not as load
            sampler.own = _with(jobs, sampler.own)
            sampler.sample()
            sampler.started = time.monotonic()
        load = sustained_load(sampler)
        jobs = slots.others()  # again: a training whose start was slower than this one's has joined by now
    except OSError:
        return _set(environ, Choice(cores, f"one per core, {cores} cores (the load could not be read)"))
    threads = threads_for(cores, 1 + len(jobs), load)
    shared = f", shared with {len(jobs)} other training{'s' if len(jobs) > 1 else ''}" if jobs else ""
    why = f"chosen at start: {cores} cores{shared}, other processes busy on {load:.1f} CPUs"
    return _set(environ, Choice(threads, why, round(load, 2), slots))


def _with(pids: List[int], own: Callable[[], float]) -> Callable[[], float]:
    return lambda: own() + sum(process_cpu_seconds(p) for p in pids if p)


def _set(environ: MutableMapping[str, str], choice: Choice) -> Choice:
    assert choice.threads is not None
    mark_chosen(environ, choice.threads, BY_CLI, choice.why, choice.load_others)
    return choice
