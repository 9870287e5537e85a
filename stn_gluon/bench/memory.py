"""Peak resident memory of a training run, measured in a fresh process (``stn-gluon bench speed``)."""
import subprocess
import sys
import tempfile
from typing import Optional

from .._runtime.errors import StnGluonError

__all__ = ["peak_training_rss"]

_PEAK_PROBE = """
import atexit, resource, sys
def report():
    try:
        peak_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    except (OSError, IndexError, ValueError):  # no /proc: ru_maxrss (may include the parent's fork)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"PEAK_KIB {peak_kib}", file=sys.stderr)
atexit.register(report)
from stn_gluon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def peak_training_rss(data_dir: Optional[str] = None) -> float:
    """Peak resident memory (MiB) of ``stn-gluon train --epochs 1`` in a fresh process.

    Read as the child's own high-water mark (``VmHWM``, reset at exec); the
    parent's ``RUSAGE_CHILDREN`` would count this large benchmark process that
    the child was forked from.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", _PEAK_PROBE, "train", "--epochs", "1", "--save-dir", tmp, "--no-progress"]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    peaks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB ")]
    if proc.returncode != 0 or not peaks:
        raise StnGluonError(f"training run for the memory measurement failed: {proc.stderr.strip()[-200:]}")
    return int(peaks[-1]) / 1024.0
