"""User-facing errors.

Anything wrong with what the user gave us (a flag, a file, a shape) raises
:class:`StnGluonError` with a one-line message naming the culprit. The CLI
prints it as ``error: <message>`` and exits with status 2, without a traceback.
"""


class StnGluonError(Exception):
    """A problem with the user's input, reported as one clear line."""


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
        super().__init__(f"{name} {problem}")

    def as_flag(self) -> str:
        """The message with the parameter spelled as its command-line flag."""
        return f"--{self.name.replace('_', '-')} {self.problem}"


def mxnet_message(err, limit=200):
    """The informative line of an ``MXNetError`` (its text starts with a C++ traceback)."""
    lines = [l.strip() for l in str(err).splitlines() if l.strip()]
    for line in reversed(lines):
        if line.startswith(("MXNetError:", "Check failed", "ValueError:")) or "Error" in line.split(":")[0]:
            return line.split("MXNetError:", 1)[-1].strip()[:limit]
    useful = [l for l in lines if not l.startswith(("Traceback", "File ", "[bt]", "Stack trace"))]
    return (useful[-1] if useful else (lines[-1] if lines else repr(err)))[:limit]
