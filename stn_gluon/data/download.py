"""Fetching MNIST over the network (only when asked: ``download=True`` / ``--download``).

The four files go to a temporary folder first and into the cache only when
all arrived intact, so a failed download (offline, blocked, a bad mirror)
leaves nothing behind, and is reported as one line.
"""
import contextlib
import io
import os
import re
import shutil
import tempfile

from .idx import find_idx_file, has_mnist
from .._runtime import mxnet_internals
from .._runtime.errors import DataError

__all__ = ["download_mnist"]

#: The MNIST files on Gluon's dataset repository, with their SHA-1 (as mxnet.gluon.data.vision.MNIST has them).
_MNIST_SHA1 = {"train-images-idx3-ubyte.gz": "6c95f4b05d2bf285e1bfb0e7960c31bd3b3f8a7d",
               "train-labels-idx1-ubyte.gz": "2a80914081dc54586dbdf242f9805a6b8d2a15fc",
               "t10k-images-idx3-ubyte.gz": "c3a25af1f52dad7f726cce8cacb138654b760d48",
               "t10k-labels-idx1-ubyte.gz": "763e7fa3757d93b0cdec073cef058b2004252c17"}


def _short_reason(err: BaseException) -> str:
    """The gist of a download failure (requests' messages run to hundreds of characters)."""
    text = str(err)
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if errno:
        return errno.group(0).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:120]


def download_mnist(cache: str) -> str:
    """Fetch MNIST with Gluon's downloader into the folder ``cache``; returns it.

    The files are fetched into a temporary folder and moved into the cache only
    when all four arrived intact, so a failed download leaves nothing behind
    (no empty cache folder either). Raises :class:`DataError` (one line) on failure.
    """
    from mxnet.gluon.utils import download

    with tempfile.TemporaryDirectory(prefix="stn-gluon-mnist-") as tmp:
        for name, sha1 in _MNIST_SHA1.items():
            if find_idx_file(cache, name[:-3]):
                continue
            url = mxnet_internals.gluon_repo_url("gluon/dataset/mnist", name)
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # its per-try messages
                    download(url, path=os.path.join(tmp, name), sha1_hash=sha1, retries=2)
            except Exception as err:  # requests' and the downloader's own errors: all mean "failed"
                raise DataError(f"downloading MNIST failed ({_short_reason(err)} for {url}); nothing was "
                                f"written; put the four MNIST files in a folder and give it as data_dir",
                                params=("data_dir",)) from None
        os.makedirs(cache, exist_ok=True)
        for name in os.listdir(tmp):
            shutil.move(os.path.join(tmp, name), os.path.join(cache, name))
    if not has_mnist(cache):
        raise DataError(f"downloading MNIST: {cache} still lacks some of the four files")
    return cache
