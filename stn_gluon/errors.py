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
