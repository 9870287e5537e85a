import gzip
import os
import struct
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)
import stn_gluon  # noqa: E402,F401  first, as in the CLI: sizes MXNet's OpenMP pool before mxnet loads


CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_WATCHED = {".git", ".venv", "__pycache__", ".pytest_cache", "build", "dist"}


def checkout_paths(root=CHECKOUT):
    """Every file and folder under the checkout, less the tool-made ones (.git, .venv*, caches, egg-info)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _NOT_WATCHED and not d.endswith(".egg-info")
                   and not d.startswith(".venv-")]  # make test's venvs for the other Pythons, made meanwhile
        rel = os.path.relpath(folder, root)
        found.update(os.path.normpath(os.path.join(rel, name)) for name in dirs + files)
    return found


#: Session fixtures that take minutes: only tests marked slow may use them (`make test` runs the fast suite on
#: three Pythons; one unmarked test using one of these runs it three more times).
SLOW_FIXTURES = {"table": "tests/test_cli_errors.py: every bad invocation run as a process"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        heavy = sorted(set(item.fixturenames) & set(SLOW_FIXTURES))
        if heavy and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} uses the fixture {heavy[0]} ({SLOW_FIXTURES[heavy[0]]}): "
                                    "mark it @pytest.mark.slow")


@pytest.fixture(scope="session", autouse=True)
def checkout_left_clean():
    """Tests leave nothing in the checkout: no new file or folder (an empty runs/x included) at the end."""
    before = checkout_paths()
    yield
    new = sorted(checkout_paths() - before)
    assert not new, f"the tests left these in the checkout: {new[:10]}"


def write_idx(path, array, gz=True):
    """Write ``array`` (uint8) as an IDX file; the reader under test is separate code."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)
    return path


@pytest.fixture(scope="session")
def cli_processes(tmp_path_factory):
    """``python -m stn_gluon`` processes forked from one that imported the package once (tests/cli_processes.py)."""
    from cli_processes import CliProcesses

    processes = CliProcesses(dict(os.environ), str(tmp_path_factory.mktemp("cli_processes")))
    yield processes
    processes.close()


@pytest.fixture(scope="session")
def sample():
    """The embedded real MNIST sample (4,000 train / 1,000 test digits)."""
    from stn_gluon.data.mnist import load_embedded_sample

    return load_embedded_sample()


def write_mnist_dir(folder, sample, n_train, n_test):
    """``folder`` made to hold the four MNIST IDX files: the first ``n_train`` / ``n_test`` digits of ``sample``."""
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", sample.train_images[:n_train])
    write_idx(folder / "train-labels-idx1-ubyte.gz", sample.train_labels[:n_train])
    write_idx(folder / "t10k-images-idx3-ubyte.gz", sample.test_images[:n_test])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", sample.test_labels[:n_test])
    return folder


@pytest.fixture
def mnist_dir(tmp_path, sample):
    """A folder of the four MNIST IDX files holding a small real subset."""
    return write_mnist_dir(tmp_path / "mnist", sample, 600, 200)


@pytest.fixture
def small_data(sample):
    """A small real MNIST split for quick training runs."""
    from stn_gluon.data.mnist import DigitDataset

    return DigitDataset(sample.train_images[:1024], sample.train_labels[:1024],
                        sample.test_images[:256], sample.test_labels[:256], source="test subset")


@pytest.fixture
def no_mnist_env(monkeypatch, tmp_path):
    """No $STN_GLUON_DATA and an empty MXNet cache: the look-up falls through."""
    monkeypatch.delenv("STN_GLUON_DATA", raising=False)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))


def assert_onnx_parity(net, onnx_path, rng, batches=(1, 7, 64)):
    """Export-parity check of an STN classifier (``return_theta=True``) against its ONNX file.

    For each batch size: logits within 1e-4, theta within 1e-5, the warped image
    within 5e-4 (float32 grid rounding), probabilities summing to 1. Returns the
    thetas of the last batch, for the caller's own checks.
    """
    import mxnet as mx

    from stn_gluon.export.onnx import OnnxModel

    ort_model = OnnxModel(str(onnx_path))
    theta = None
    for batch in batches:
        x = rng.normal(0, 1, (batch,) + tuple(net.config["input_shape"])).astype(np.float32)
        logits, theta = net(mx.nd.array(x))
        warped, _ = net.stn(mx.nd.array(x))
        got = ort_model.run(x)
        assert np.abs(got["logits"] - logits.asnumpy()).max() <= 1e-4
        np.testing.assert_allclose(got["theta"], theta.asnumpy(), atol=1e-5)
        np.testing.assert_allclose(got["warped"], warped.asnumpy(), atol=5e-4)
        np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1, rtol=1e-5)
    return theta.asnumpy()


@pytest.fixture(scope="session")
def served_model(tmp_path_factory, sample):
    """A model trained briefly (4 epochs) on the embedded real digits, exported for both backends:
    ``-symbol.json``/``.params`` and ``model.onnx`` in one folder (shared by the serving and inference tests)."""
    from stn_gluon.export.onnx import export_onnx
    from stn_gluon.train.gluon import TrainConfig, fit

    save = tmp_path_factory.mktemp("served")
    fit(TrainConfig(epochs=4, lr=0.05, save_dir=str(save), progress=False), dataset=sample, echo=lambda s: None)
    export_onnx(str(save), save / "model.onnx")
    return save


def run_cli(capsys, *args):
    """``stn-gluon ARGS`` in this process -> ``(exit status, stdout, stderr)``."""
    from stn_gluon.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err
