"""``python -m stn_gluon ARGS`` as real processes, without paying MXNet's import for each one.

A fresh interpreter spends about 2 s of CPU importing MXNet before the command
runs; a table of 50 bad invocations spent most of its time there (three
times over, once per Python that CI tests). :class:`CliProcesses` starts
``python -c ZYGOTE`` once: it imports ``stn_gluon.cli`` (what ``python -m
stn_gluon`` imports before it runs) and then forks one child per command. The
child is a process of its own (own pid, working folder, environment, stdin
from /dev/null, stdout and stderr), runs ``stn_gluon`` as ``__main__`` with
:mod:`runpy` as ``-m`` does, at the top level of the interpreter: an uncaught
exception is printed with its traceback and exits 1, ``sys.exit`` and atexit
handlers work as in a fresh process. What the import wrote on stderr (a
warning, say) is written again at the start of each child's stderr, so a
command whose output must be one line still fails when the import is noisy.

What it cannot show is anything that happens while the package is imported
in that process (the environment is the zygote's then); the tests that start
a fresh ``python -m stn_gluon`` (test_cli.py, test_runs.py, test_serving.py)
keep covering that.
"""
import json
import os
import queue
import subprocess
import sys
import tempfile
from typing import List, Optional

ZYGOTE = r"""
import json, os, runpy, select, signal, sys, tempfile, time
saved_err = os.dup(2)
noise = tempfile.TemporaryFile()
os.dup2(noise.fileno(), 2)
import stn_gluon.cli  # what `python -m stn_gluon` imports first
sys.stderr.flush()
os.dup2(saved_err, 2)
noise.seek(0)
IMPORT_NOISE = noise.read()
print("READY", flush=True)
child = False
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child = True
        break
    deadline = time.monotonic() + req["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.005)
    print(json.dumps({"code": code}), flush=True)
if not child:
    sys.exit(0)
os.chdir(req["cwd"])
os.environ.clear()
os.environ.update(req["env"])
for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                        (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
    opened = os.open(path, flags, 0o600)
    os.dup2(opened, fd)
    os.close(opened)
os.write(2, IMPORT_NOISE)
sys.argv = ["-m"] + req["args"]
sys.path[0] = os.getcwd()  # as `python -m` puts it
del child, req, line, noise, saved_err
runpy.run_module("stn_gluon", run_name="__main__", alter_sys=True)
"""


class CliProcesses:
    """``count`` zygotes started with ``env``; :meth:`run` takes whichever is free (thread-safe)."""

    def __init__(self, env: dict, workdir: str, count: int = 1):
        self.env, self.workdir = env, workdir
        self.idle: "queue.Queue[subprocess.Popen]" = queue.Queue()
        self.all = []
        for _ in range(count):
            proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=env, text=True, cwd=workdir)
            self.all.append(proc)
        for proc in self.all:
            assert proc.stdout.readline().strip() == "READY", "the CLI zygote did not start"
            self.idle.put(proc)

    def run(self, args: List[str], cwd: str, env: Optional[dict] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m stn_gluon *args`` in ``cwd``: a CompletedProcess (returncode, stdout, stderr as text)."""
        fd, out = tempfile.mkstemp(dir=self.workdir)
        os.close(fd)
        err = out + ".err"
        proc = self.idle.get()
        try:
            request = dict(args=[str(a) for a in args], cwd=str(cwd), env=dict(self.env if env is None else env),
                           stdout=out, stderr=err, timeout=timeout)
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
        finally:
            self.idle.put(proc)
        with open(out) as f, open(err) as g:
            result = subprocess.CompletedProcess(["python", "-m", "stn_gluon", *args], reply["code"], f.read(),
                                                 g.read())
        os.remove(out)
        os.remove(err)
        if reply["code"] is None:
            raise subprocess.TimeoutExpired(result.args, timeout, result.stdout, result.stderr)
        return result

    def close(self) -> None:
        for proc in self.all:
            proc.stdin.close()
            proc.wait(timeout=30)
