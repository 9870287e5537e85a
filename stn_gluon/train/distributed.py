"""Training across processes and machines on MXNet's parameter-server kvstore (ps-lite).

Two halves:

* :class:`WorkerGroup`, what a training process needs: the kvstore
  (``--kvstore``), its rank among the workers and their number, the batch
  that normalises the gradient, and a barrier. With ``local``/``device`` it is
  a group of one and the trainers run as before.
* :func:`launch` / :class:`Job`, the launcher behind ``stn-gluon launch``:
  it starts the scheduler, the servers and the workers with the ``DMLC_*``
  environment that configures them (as ``dmlc_tracker``, the launcher that
  ships in the MXNet wheel, does), watches them, and ends the whole job as
  soon as one of them fails (ps-lite itself would wait forever), saying which
  one. The local launcher binds everything to 127.0.0.1 on a free port; the
  ssh launcher reads ``dmlc_tracker``'s host-file format.

Security: ps-lite has no authentication, and every server unpickles the body of the command messages it
receives (``mxnet/kvstore/kvstore_server.py``, whatever the kvstore): anyone who can reach a server's port
can run code as the user who trains. A job's ports must be reachable only from its own hosts. So the
processes ``launch`` starts never inherit a ``DMLC_*`` variable (``DMLC_USE_KUBERNETES`` would make the
scheduler listen on 0.0.0.0, ``DMLC_LOCAL`` on sockets in /tmp), the ssh launcher accepts a new host key
but never a changed one (``StrictHostKeyChecking=accept-new``), and the remote command line carries only
an allow-list of variables, quoted, and never a credential (it is visible in ``ps``).

The rule that makes a distributed run the same recipe as one process: with a
synchronous store (``dist_sync``, ``dist_device_sync``), N workers with
``batch_size`` B each take one step on N*B images (each worker a disjoint
B-slice of the global batch the single process would take), the servers sum
the N gradients, and the step divides by N*B with the learning rate as given:
exactly one process with ``batch_size`` N*B, up to the order of float
additions. ``dist_async`` applies each worker's push on its own (normalised by
B; no such equivalence).
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._runtime import mxnet_internals
from .._runtime.compat import standalone_prelude
from .._runtime.errors import ConfigError, StnGluonError
from .recipes import KVSTORES
from .schedule import make_lr_scheduler, make_server_lr_scheduler
from .._runtime.threads import BY_LAUNCH, CHOSEN_ENV, mark_chosen, physical_cores, user_setting

__all__ = ["KVSTORES", "DIST_KVSTORES", "WorkerGroup", "is_dist", "Job", "launch", "free_port", "read_hostfile",
           "role_environments", "ssh_command", "remote_env", "FORWARDED_ENV", "PS_NODE_CODE", "LOOPBACK",
           "exit_if_distributed", "launch_threads", "launched_environment"]

#: The ``--kvstore`` choices that make a job of several processes on ps-lite (all: :data:`KVSTORES`).
DIST_KVSTORES = tuple(k for k in KVSTORES if k.startswith("dist"))
LOOPBACK = "127.0.0.1"
ROLES = ("scheduler", "server", "worker")


def is_dist(kvstore: str) -> bool:
    """Whether ``kvstore`` is one of the parameter-server stores (``dist_*``)."""
    return kvstore in DIST_KVSTORES


#: The kvstore key of :meth:`WorkerGroup.compare_weights` (far above the trainers' parameter indices) and
#: the number of 16-bit pieces of each worker's hash it gathers.
FINGERPRINT_KEY = 1 << 30
FINGERPRINT_NAME = "stn_gluon:weights_fingerprint"
FINGERPRINT_CHUNKS = 8

#: Whether this process created a distributed kvstore (see :func:`exit_if_distributed`).
_LIVE = {"dist": False}


class WorkerGroup:
    """The processes that train one model together, seen from one of them.

    kvstore: the ``--kvstore`` name. num_contexts: devices of this process.
    A ``dist_*`` store connects to the scheduler named by ``DMLC_PS_ROOT_URI``
    / ``DMLC_PS_ROOT_PORT`` (set by :func:`launch`) and blocks until every
    worker and server has joined.
    """

    def __init__(self, kvstore: str = "device", num_contexts: int = 1):
        if kvstore not in KVSTORES:
            raise ConfigError("kvstore", f"{kvstore!r}: choose {', '.join(KVSTORES)}")
        self.name = kvstore
        self.dist = is_dist(kvstore)
        self.kvstore: Any = None
        if self.dist:
            if os.environ.get("DMLC_ROLE", "worker") != "worker" or "DMLC_PS_ROOT_URI" not in os.environ:
                raise StnGluonError(f"kvstore {kvstore} needs the scheduler's address (DMLC_PS_ROOT_URI, "
                                    f"DMLC_PS_ROOT_PORT...): start the job with `stn-gluon launch -n WORKERS "
                                    f"-s SERVERS -- train ...`", params=("kvstore",))
            # init and broadcast confirmed before they return (mxnet_internals.create_kvstore says why)
            self.kvstore = mxnet_internals.create_kvstore(kvstore)
            _LIVE["dist"] = True
        elif os.environ.get("DMLC_ROLE") == "worker":
            raise StnGluonError(f"this process is a worker of a distributed job (DMLC_ROLE=worker) but kvstore is "
                                f"{kvstore}: every worker would train alone and write the same files; use "
                                f"kvstore dist_sync, dist_device_sync or dist_async", params=("kvstore",))
        elif num_contexts > 1:
            self.kvstore = kvstore
        self.rank = self.kvstore.rank if self.dist else 0
        self.num_workers = self.kvstore.num_workers if self.dist else 1

    @property
    def is_lead(self) -> bool:
        """Worker 0: the one that evaluates and writes every file of the run."""
        return self.rank == 0

    @property
    def sync(self) -> bool:
        """Whether the servers sum the workers' gradients into one step (every store but ``dist_async``)."""
        return "async" not in self.name

    @property
    def update_on_kvstore(self) -> Optional[bool]:
        """Where the optimizer runs: on the servers only for ``dist_async`` (MXNet requires it there).

        Synchronous stores only sum gradients; every worker then takes the same
        step with its own optimizer, whose state is checkpointed and resumed.
        """
        return (not self.sync) if self.dist else None

    def lr_scheduler(self, cfg: Any, iters_per_epoch: int) -> Any:
        """The run's learning-rate schedule, in the form the optimizer's host can load.

        gluoncv's (:func:`~stn_gluon.train.schedule.make_lr_scheduler`) where the
        workers update; MXNet's own (:func:`~stn_gluon.train.schedule.make_server_lr_scheduler`)
        for ``dist_async``, whose servers cannot import gluoncv.
        With ``dist_async`` the servers count an update per worker push: an
        epoch is ``num_workers`` times as many updates there.
        """
        if self.update_on_kvstore:
            return make_server_lr_scheduler(cfg, iters_per_epoch * self.num_workers)
        return make_lr_scheduler(cfg, iters_per_epoch)

    def learning_rate(self, local_lr: float, scheduler: Any, steps: int) -> float:
        """The learning rate after ``steps`` steps of this worker: its optimizer's, or (``dist_async``,
        where this worker's optimizer copy does not advance) the servers' schedule at that point."""
        return float(scheduler(steps * self.num_workers)) if self.update_on_kvstore else local_lr

    def grad_batch(self, batch_size: int) -> int:
        """The number of images one optimizer step normalises by: the global batch in sync mode."""
        return batch_size * self.num_workers if self.dist and self.sync else batch_size

    def shard(self) -> Tuple[int, int]:
        """``(rank, num_workers)``: this worker's slice of every global batch."""
        return self.rank, self.num_workers

    def barrier(self) -> None:
        """Wait until every worker arrives here (nothing to wait for in a group of one)."""
        if self.dist:
            mxnet_internals.barrier(self.kvstore)

    def compare_weights(self, arrays: Dict[str, Any], key: Any = None) -> Optional[bool]:
        """Whether every worker holds bit-identical ``arrays`` (name -> NDArray); ``None`` if not comparable.

        key: the kvstore key to gather on, of the kind the trainer's keys are
        (MXNet refuses a mix): :data:`FINGERPRINT_KEY` (Gluon's integer
        indices, the default) or :data:`FINGERPRINT_NAME` (Module's names).

        A synchronous job must end with the same weights everywhere. Each
        worker hashes its arrays (SHA-256, in name order) and the hashes are
        gathered through the kvstore (each worker fills its own row of a
        zero matrix, the servers sum). ``None`` in a group of one and with
        ``dist_async`` (its workers pull at different moments; its servers
        would apply the optimizer to the pushed rows).
        """
        if not (self.dist and self.sync):
            return None
        import mxnet as mx  # lazy: the launcher imports this module and must not load MXNet

        digest = hashlib.sha256()
        for name in sorted(arrays):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(arrays[name].asnumpy()).tobytes())
        chunks = np.frombuffer(digest.digest()[:FINGERPRINT_CHUNKS * 2], dtype=">u2").astype(np.float32)
        rows = np.zeros((self.num_workers, FINGERPRINT_CHUNKS), dtype=np.float32)
        rows[self.rank] = chunks  # integers < 2**16: float32 sums of them and zeros are exact
        out = mx.nd.zeros(rows.shape)
        key = FINGERPRINT_KEY if key is None else key
        self.kvstore.init(key, mx.nd.zeros(rows.shape))
        self.kvstore.pushpull(key, mx.nd.array(rows), out=out)
        gathered = out.asnumpy()
        return bool((gathered == gathered[0]).all())

    def describe(self) -> Dict[str, Any]:
        """What the run's files say about how it was distributed."""
        return dict(kvstore=self.name, workers=self.num_workers, rank=self.rank,
                    rule="each step: every worker a disjoint batch_size slice of one global batch of "
                         "batch_size x workers images, gradients summed on the servers and divided by the global "
                         "batch, lr as given (= one process with batch_size x workers)" if self.dist and self.sync
                    else "each worker's step applied on the servers as it comes (asynchronous)" if self.dist
                    else "one process")


def exit_if_distributed(code: int) -> None:
    """End a failed worker of a distributed job now, with ``code``.

    At exit, MXNet's dist kvstore waits at a barrier for the other workers,
    which wait for this one: a worker that stops on an error would hang the
    job instead of ending it (the launcher ends the rest when it sees this one
    exit). Does nothing in a process without a distributed kvstore.
    """
    if _LIVE["dist"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# --------------------------------------------------------------------------------------------------- launcher

#: What the scheduler and the servers run: importing mxnet with DMLC_ROLE set serves until the job ends.
#: Inline (not ``-m stn_gluon...``): importing stn_gluon imports mxnet, whose errors would come as tracebacks.
PS_NODE_CODE = (
    "import os, sys\n"
    f"{standalone_prelude()}  # numpy's removed aliases and distutils, as import stn_gluon puts them back\n"
    "sys.modules['torch'] = None  # gluoncv (in a dist_async optimizer) refuses torch >= 2\n"
    "try:\n"
    "    import mxnet\n"
    "except Exception as err:\n"
    "    lines = [l.strip() for l in str(err).splitlines() if l.strip()]\n"
    "    reason = lines[-1].split('MXNetError:', 1)[-1].strip() if lines else repr(err)\n"
    "    role = os.environ.get('DMLC_ROLE')\n"
    "    where = os.environ.get('DMLC_PS_ROOT_URI', '') + ':' + os.environ.get('DMLC_PS_ROOT_PORT', '')\n"
    "    what = f'scheduler could not listen on {where}' if role == 'scheduler' else f'{role} failed to start'\n"
    "    print(f'error: {what} ({reason})', file=sys.stderr, flush=True)\n"
    "    os._exit(2)\n"
)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on at ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Raise a one-line :class:`StnGluonError` if the scheduler could not listen on ``host:port``."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
    except OSError as err:
        raise StnGluonError(f"the scheduler cannot listen on {host}:{port} ({err.strerror or err}); "
                            f"choose another port", params=("port",)) from None


def read_hostfile(path: str) -> List[Tuple[str, str]]:
    """``[(host, ssh_port), ...]`` from a host file, in ``dmlc_tracker``'s format.

    One machine a line, ``host`` or ``host:ssh_port``; MPI's ``slots=`` and
    blank lines are ignored.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise StnGluonError(f"hostfile {path}: {err.strerror or err}", params=("hostfile",)) from None
    hosts = []
    for line in lines:
        line = line.split("slots=")[0].split("#")[0].strip()
        if not line:
            continue
        host, _, port = line.partition(":")
        if not host or (port and not port.isdigit()):
            raise StnGluonError(f"hostfile {path}: {line!r} is not host or host:ssh_port", params=("hostfile",))
        hosts.append((host, port or "22"))
    if not hosts:
        raise StnGluonError(f"hostfile {path} names no machine", params=("hostfile",))
    return hosts


def role_environments(num_workers: int, num_servers: int, root_uri: str, root_port: int,
                      node_host: Optional[str] = None) -> List[Tuple[str, int, Dict[str, str]]]:
    """``[(role, index, env), ...]`` for the scheduler, the servers and the workers of a job.

    env: the ``DMLC_*`` variables ps-lite reads (``DMLC_NODE_HOST``: the address
    a node binds and announces; the local launcher pins it to 127.0.0.1).
    """
    common = dict(DMLC_PS_ROOT_URI=root_uri, DMLC_PS_ROOT_PORT=str(root_port), DMLC_NUM_SERVER=str(num_servers),
                  DMLC_NUM_WORKER=str(num_workers))
    if node_host is not None:
        common["DMLC_NODE_HOST"] = node_host
    roles = [("scheduler", 0)] + [("server", i) for i in range(num_servers)] + \
            [("worker", i) for i in range(num_workers)]
    return [(role, i, dict(common, DMLC_ROLE=role, DMLC_TASK_ID=str(i))) for role, i in roles]


#: Variables of this environment that the ssh launcher passes to the remote processes, beside the job's own
#: (``DMLC_*``, and a ``launch(env=...)``): nothing else travels, credentials never (see :func:`remote_env`).
FORWARDED_ENV = ("OMP_NUM_THREADS", "KMP_AFFINITY", "LD_LIBRARY_PATH")
#: Names that look like a credential: never put on a command line (``ps`` shows it to every local user).
_CREDENTIAL = re.compile(r"SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|API_?KEY|AUTH|SESSION|COOKIE|^AWS_"
                         r"|^AZURE_|^GOOGLE_APPLICATION|^GH_|^GITHUB_", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def remote_env(env: Dict[str, str], environ: Optional[Dict[str, str]] = None) -> str:
    """The ``export NAME=value;`` prefix of a remote command: ``env`` and this environment's :data:`FORWARDED_ENV`,
    every value quoted (:func:`shlex.quote`). A name that is no variable name, or that looks like a credential
    (``AWS_SECRET_ACCESS_KEY``, ``..._TOKEN``...), is refused with one line: set those on the remote machines."""
    environ = dict(os.environ if environ is None else environ)
    values = {k: environ[k] for k in FORWARDED_ENV if k in environ}
    values.update(env)
    parts = []
    for name, value in values.items():
        if not _NAME.fullmatch(str(name)):
            raise StnGluonError(f"launch: {str(name)[:60]!r} is not an environment variable name")
        if _CREDENTIAL.search(name):
            raise StnGluonError(f"launch: {name} looks like a credential and would be visible in ps on the ssh "
                                f"command line; set it in the remote machines' own environment instead")
        parts.append(f"export {name}={shlex.quote(str(value))};")
    return " ".join(parts)


def ssh_command(host: Tuple[str, str], env: Dict[str, str], command: Sequence[str], workdir: str) -> List[str]:
    """The ``ssh`` command line that runs ``command`` on ``host`` with ``env`` (:func:`remote_env`: quoted,
    an allow-list of this environment's variables, no credential).

    ``-tt``: the remote process gets a hang-up, and ends, when the launcher ends this ssh.
    ``StrictHostKeyChecking=accept-new``: a host seen for the first time is added to ``known_hosts``, a host
    whose key changed is refused (``no`` would accept a man in the middle).
    """
    env = dict(env, DMLC_NODE_HOST=host[0])
    remote = f"{remote_env(env)} cd {shlex.quote(workdir)}; exec {shlex.join(command)}"
    return ["ssh", "-tt", "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-p", host[1], "--",
            host[0], remote]


def launched_environment(environ: Optional[Dict[str, str]] = None) -> Tuple[Dict[str, str], List[str]]:
    """The environment the processes of a job start from: ``environ`` (default: this process's) without any
    ``DMLC_*`` variable (:func:`launch` sets those itself; an inherited ``DMLC_USE_KUBERNETES`` would make the
    scheduler listen on every interface, ``DMLC_LOCAL`` on sockets in /tmp) and without a thread count chosen
    for this process; and the ``DMLC_*`` names dropped."""
    environ = dict(os.environ if environ is None else environ)
    dropped = sorted(k for k in environ if k.startswith("DMLC_"))
    return {k: v for k, v in environ.items() if k != CHOSEN_ENV and not k.startswith("DMLC_")}, dropped


def launch_threads(cores: int, workers: int, servers: int) -> Dict[str, int]:
    """OpenMP threads of each role of a job with ``workers`` workers and ``servers`` servers on ``cores`` cores.

    The workers divide the cores among themselves (at least one thread each);
    a server and the scheduler get one: with a synchronous store a server sums
    the gradients while the workers wait for it, so it needs no core of its own.
    """
    return dict(worker=max(1, cores // max(1, workers)), server=1, scheduler=1)


def _thread_env(role: str, threads: Dict[str, int], cores: int, workers: int) -> Dict[str, str]:
    """The ``OMP_NUM_THREADS`` (and its record, see :func:`stn_gluon._runtime.threads.mark_chosen`) of a process
    of ``role`` that the local launcher starts."""
    env: Dict[str, str] = {}
    why = (f"{cores} cores divided among {workers} worker{'s' if workers > 1 else ''} on this machine"
           if role == "worker" else f"one thread for the {role}")
    mark_chosen(env, threads[role], BY_LAUNCH, why)
    return env


@dataclass
class Job:
    """The processes of one distributed job, started by :meth:`start` and watched by :meth:`wait`.

    command: what each worker runs (argv). ps_command: what the scheduler and
    the servers run (default: this Python with :data:`PS_NODE_CODE`).
    threads: ``OMP_NUM_THREADS`` per role of the processes started here
    (:func:`launch_threads`; ``None``: each inherits this environment's).
    hosts: ``None`` runs everything here on 127.0.0.1; a list of
    ``(host, ssh_port)`` runs servers and workers there over ssh (round robin,
    servers first, as ``dmlc_tracker.ssh``) with the scheduler here on
    ``root_uri``.
    """
    command: Sequence[str]
    num_workers: int
    num_servers: int = 1
    hosts: Optional[List[Tuple[str, str]]] = None
    root_uri: str = LOOPBACK
    port: Optional[int] = None
    env: Dict[str, str] = field(default_factory=dict)
    ps_command: Optional[Sequence[str]] = None
    remote_python: str = "python3"
    workdir: Optional[str] = None
    echo: Callable[[str], None] = print
    threads: Optional[Dict[str, int]] = None
    processes: List[Tuple[str, int, subprocess.Popen]] = field(default_factory=list)
    failure: Optional[str] = None

    def start(self) -> "Job":
        """Start the scheduler, the servers and the workers (each in its own process group)."""
        if self.num_workers < 1 or self.num_servers < 1:
            raise StnGluonError("a job needs at least one worker and one server", params=("workers", "servers"))
        local = self.hosts is None
        port = self.port if self.port is not None else free_port(self.root_uri if local else "")
        check_port(self.root_uri if local else "", port)
        workdir = self.workdir or os.getcwd()
        base = self._base_environment(local)
        for role, index, env in role_environments(self.num_workers, self.num_servers, self.root_uri, port,
                                                  LOOPBACK if local else None):
            argv = list(self.command) if role == "worker" else list(
                self.ps_command or [sys.executable if local or role == "scheduler" else self.remote_python,
                                    "-c", PS_NODE_CODE])
            env = dict(self.env, **env)
            if role != "scheduler" and not local:
                assert self.hosts is not None
                slot = index if role == "server" else self.num_servers + index
                argv = ssh_command(self.hosts[slot % len(self.hosts)], env, argv, workdir)
                env = {}
            if role == "scheduler":
                env["DMLC_NODE_HOST"] = self.root_uri
            if self.threads is not None and (local or role == "scheduler"):
                env.update(_thread_env(role, self.threads, physical_cores(), self.num_workers))
            proc = subprocess.Popen(argv, env=dict(base, **env), start_new_session=True)
            self.processes.append((role, index, proc))
        self.echo(f"launch: scheduler on {self.root_uri}:{port}, {self.num_servers} server(s), "
                  f"{self.num_workers} worker(s)" + ("" if local else f" on {len(self.hosts or [])} host(s)"))
        return self

    def _base_environment(self, local: bool) -> Dict[str, str]:
        """What every process starts from (:func:`launched_environment`, the dropped ``DMLC_*`` said in one line);
        refuses a ``DMLC_*`` in :attr:`env` and (ssh) what :func:`remote_env` refuses, before anything starts."""
        given = sorted(k for k in self.env if k.startswith("DMLC_"))
        if given:
            raise StnGluonError(f"launch: env sets {', '.join(given)}; launch sets the DMLC_* variables of a job itself")
        if not local:
            remote_env(self.env)  # a credential or a bad name: refused now, not after the scheduler started
        base, dropped = launched_environment()  # no inherited DMLC_*: launch alone says where a node listens
        if dropped:
            where = "; a local job listens on 127.0.0.1 only" if local else ""
            self.echo(f"launch: ignoring {', '.join(dropped)} from the environment (launch sets the DMLC_* "
                      f"variables of its processes{where})")
        return base

    def _role_name(self, role: str, index: int) -> str:
        return role if role == "scheduler" else f"{role} {index}"

    def wait(self, timeout: Optional[float] = None, poll: float = 0.2, linger: float = 30.0) -> int:
        """Wait for the job; its exit status (0: every worker finished).

        The first process that exits non-zero (killed, crashed, out of memory,
        an error) ends the job: the others are stopped and :attr:`failure`
        says which role died. After the workers finish, the servers and the
        scheduler get ``linger`` seconds to leave. ``timeout``: stop everything
        after that many seconds (status 124).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        workers_done_at = None
        while True:
            for role, index, proc in self.processes:
                code = proc.poll()
                if code is not None and code != 0:
                    how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in
                           signal.valid_signals() else f"exited with status {code}")
                    self.failure = f"{self._role_name(role, index)} (pid {proc.pid}) {how}; stopped the job"
                    self.stop()
                    return code if code > 0 else 128 - code
            workers = [p for r, _, p in self.processes if r == "worker"]
            if all(p.poll() is not None for p in workers):
                if all(p.poll() is not None for _, _, p in self.processes):
                    return 0
                workers_done_at = workers_done_at or time.monotonic()
                if time.monotonic() - workers_done_at > linger:
                    self.failure = "the servers did not stop after the workers finished; stopped them"
                    self.stop()
                    return 0
            if deadline is not None and time.monotonic() > deadline:
                self.failure = f"the job ran past {timeout:g} s; stopped it"
                self.stop()
                return 124
            time.sleep(poll)

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process still running: SIGTERM to its process group, SIGKILL after ``grace`` seconds."""
        running = [p for _, _, p in self.processes if p.poll() is None]
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def launch(command: Sequence[str], num_workers: int, num_servers: int = 1, launcher: str = "local",
           hostfile: Optional[str] = None, port: Optional[int] = None, host_ip: Optional[str] = None,
           env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
           echo: Callable[[str], None] = print) -> int:
    """Run ``command`` as ``num_workers`` workers with ``num_servers`` servers and a scheduler; exit status.

    launcher ``local``: every process here, on 127.0.0.1. ``ssh``: servers and
    workers on the machines of ``hostfile`` (the working directory and the
    environment travel, the files do not), the scheduler here on ``host_ip``
    (default: this machine's address as ``dmlc_tracker`` finds it).
    """
    if launcher not in ("local", "ssh"):
        raise ConfigError("launcher", f"{launcher!r}: choose local, ssh")
    if not command:
        raise StnGluonError("launch: give the worker command after --, e.g. -- train --kvstore dist_sync")
    hosts = None
    root = LOOPBACK
    if launcher == "ssh":
        if hostfile is None:
            raise StnGluonError("launcher ssh needs a hostfile (-H)", params=("hostfile",))
        hosts = read_hostfile(hostfile)
        from dmlc_tracker.tracker import get_host_ip

        root = host_ip or get_host_ip("auto")
    threads = None
    if user_setting() is None and "OMP_NUM_THREADS" not in (env or {}):
        # as torchrun: the processes started here share this machine's cores (each process on a remote machine
        # chooses its own count there, as a `stn-gluon` command does)
        threads = launch_threads(physical_cores(), num_workers if hosts is None else 0, num_servers)
        if hosts is None:
            echo(f"launch: CPU threads: {threads['worker']} per worker ({physical_cores()} cores, {num_workers} "
                 f"workers here), 1 per server and the scheduler; set OMP_NUM_THREADS to choose")
    job = Job(command, num_workers, num_servers, hosts=hosts, root_uri=root, port=port, env=dict(env or {}),
              echo=echo, threads=threads).start()
    try:
        code = job.wait(timeout=timeout)
    except KeyboardInterrupt:
        job.failure = "interrupted; stopped the job"
        job.stop()
        code = 130
    if job.failure:
        echo(f"launch: {job.failure}")
    return code
