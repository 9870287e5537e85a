"""User-facing errors.

Anything wrong with what the user gave us (a flag, a file, a shape) raises
:class:`StnGluonError` with a one-line message naming the culprit. The CLI
prints it as ``error: <message>`` and exits with status 2, without a traceback.

Library messages name parameters (``save_dir``), not command-line flags; an
error lists the parameter names it mentions in ``params``, and
:meth:`StnGluonError.for_cli` spells them as flags (``--save-dir``).
"""
import re
from typing import Sequence


class StnGluonError(Exception):
    """A problem with the user's input, reported as one clear line.

    params: the parameter names the message mentions, for :meth:`for_cli`.
    """

    def __init__(self, message: str = "", params: Sequence[str] = ()):
        super().__init__(message)
        self.params = tuple(params)

    def for_cli(self) -> str:
        """The message with each of ``params`` written as its flag (``batch_size`` -> ``--batch-size``)."""
        text = str(self)
        for name in self.params:
            # a whole word, not part of a path or file name (``runs/save_dir/x`` stays as it is)
            text = re.sub(rf"(?<![\w\-/.~]){re.escape(name)}(?![\w\-/.]\w|\w|/)", "--" + name.replace("_", "-"), text)
        return text


class DataError(StnGluonError):
    """A data file is missing, truncated, corrupt or inconsistent."""


class CheckpointError(StnGluonError):
    """A checkpoint or exported model is missing, damaged or does not match."""


class ConfigError(StnGluonError):
    """A configuration value out of range or not among its choices.

    Names the parameter (``epochs must be >= 1, got 0``); the CLI prints the
    flag instead (``--epochs must be >= 1, got 0``).
    """

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name} {problem}", params=(name,))


def mxnet_message(err: BaseException, limit: int = 200) -> str:
    """The informative line of an ``MXNetError`` (its text starts with a C++ traceback)."""
    lines = [l.strip() for l in str(err).splitlines() if l.strip()]
    for line in reversed(lines):
        if line.startswith(("MXNetError:", "Check failed", "ValueError:")) or "Error" in line.split(":")[0]:
            return line.split("MXNetError:", 1)[-1].strip()[:limit]
    useful = [l for l in lines if not l.startswith(("Traceback", "File ", "[bt]", "Stack trace"))]
    return (useful[-1] if useful else (lines[-1] if lines else repr(err)))[:limit]
