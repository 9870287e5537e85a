"""Bad invocations of the command line, each ``python -m stn_gluon`` in a process of its own.

In the style of the server's malformed-request table (test_serving.py): every
case must end with exit status 2, exactly one line on stderr (``error: ...``,
or argparse's ``stn-gluon <cmd>: error: ...``), no traceback, and the user's
files byte-for-byte as they were, with nothing added. The processes run two at
a time, once per session, forked from two interpreters that imported the
package once (tests/cli_processes.py: what differs from a fresh interpreter);
one small model, trained once, serves every case.
"""
import hashlib
import io
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cli_processes import CliProcesses
from conftest import run_cli, write_mnist_dir

README = b"# my notes\n\nnothing to do with stn-gluon\n"
ONE_LINE = re.compile(r"^(stn-gluon( [\w-]+)?: )?error: ")


def _png(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _binary(path):
    path.write_bytes(bytes(range(256)) * 8)


def _damaged_model(how, filename, checksums=True):
    """Setup: a copy of the shared model in the case folder, with ``filename`` damaged by ``how``.

    checksums=False: its model.json without the SHA-256 of the files (as from an older release),
    so that the damaged file itself is read.
    """
    def setup(case_dir, model):
        copy = case_dir / "damaged"
        shutil.copytree(model, copy)
        if not checksums:
            meta = json.loads((copy / "model.json").read_text())
            meta.pop("sha256")
            (copy / "model.json").write_text(json.dumps(meta))
        how(copy / filename)
    return setup


def _mkdir(name):
    def setup(case_dir, model):
        (case_dir / name).mkdir()
    return setup


def _write(name, data):
    def setup(case_dir, model):
        (case_dir / name).write_bytes(data)
    return setup


def _two_digits_named_1(case_dir, model):
    for folder in ("a", "b"):
        (case_dir / folder).mkdir()
        (case_dir / folder / "1.png").write_bytes(_png(np.eye(28) * 255))


# name: (arguments, a piece of the error line, setup or None); in the arguments, MODEL is the shared
# model's folder, DATA a small MNIST folder, DAMAGED the case's damaged copy of the model
CASES = {
    # train / train-symbol
    "train_epochs_negative": (["train", "--epochs", "-1"], "epochs", None),
    "train_unknown_dataset": (["train", "--dataset", "imagenet"], "imagenet", None),
    "train_unknown_transform": (["train", "--transform", "warp"], "warp", None),
    "train_knob_of_another_model": (["train", "--model", "stn_idsia", "--localization", "saliency"],
                                    "--localization 'saliency': a choice of stn_lenet's STN only, not of "
                                    "stn_idsia's", None),
    "train_bad_ctx": (["train", "--ctx", "tpu", "--data-dir", "DATA", "--save-dir", "run"], "tpu", None),
    "train_missing_gpu": (["train", "--ctx", "gpu:63", "--data-dir", "DATA", "--save-dir", "run"],
                          "gpu 63 requested", None),
    "train_save_dir_is_a_file": (["train", "--save-dir", "README.md", "--data-dir", "DATA"],
                                 "--save-dir README.md: is a file, not a folder", None),
    "train_save_dir_under_a_file": (["train", "--save-dir", "README.md/x", "--data-dir", "DATA"],
                                    "README.md is a file, not a folder", None),
    "train_save_dir_unwritable": (["train", "--save-dir", "/proc/stn_gluon_run", "--data-dir", "DATA"],
                                  "cannot write in /proc", None),
    "train_symbol_save_dir_is_a_file": (["train-symbol", "--save-dir", "README.md", "--data-dir", "DATA"],
                                        "is a file, not a folder", None),
    "train_data_dir_missing": (["train", "--data-dir", "nope", "--save-dir", "run"], "not a directory", None),
    "train_data_dir_is_a_file": (["train", "--data-dir", "README.md", "--save-dir", "run"],
                                 "not a directory", None),
    "train_batch_too_big": (["train", "--batch-size", "100000", "--data-dir", "DATA", "--save-dir", "run"],
                            "larger than the training set", None),
    # evaluate
    "evaluate_model_missing": (["evaluate", "--model", "nothing", "--data-dir", "DATA"], "no exported model", None),
    "evaluate_symbol_binary": (["evaluate", "--model", "DAMAGED", "--data-dir", "DATA"],
                               "not a valid MXNet symbol file", _damaged_model(_binary, "model-symbol.json", False)),
    "evaluate_symbol_truncated": (["evaluate", "--model", "DAMAGED", "--data-dir", "DATA"],
                                  "not a valid MXNet symbol file",
                                  _damaged_model(_truncate, "model-symbol.json", False)),
    "evaluate_symbol_changed": (["evaluate", "--model", "DAMAGED", "--data-dir", "DATA"],
                                "SHA-256 does not match", _damaged_model(_binary, "model-symbol.json")),
    "evaluate_params_truncated": (["evaluate", "--model", "DAMAGED", "--data-dir", "DATA"], "model-0000.params",
                                  _damaged_model(_truncate, "model-0000.params")),
    "evaluate_model_json_garbage": (["evaluate", "--model", "DAMAGED", "--data-dir", "DATA"], "model.json",
                                    _damaged_model(lambda p: p.write_text("{not json"), "model.json")),
    "evaluate_data_dir_is_a_file": (["evaluate", "--model", "MODEL", "--data-dir", "README.md"],
                                    "not a directory", None),
    # visualize
    "visualize_out_under_a_file": (["visualize", "--model", "MODEL", "--out", "README.md/x.png", "--data-dir", "DATA"],
                                   "README.md is a file, not a folder", None),
    "visualize_out_missing_folder": (["visualize", "--model", "MODEL", "--out", "nodir/x.png", "--data-dir", "DATA"],
                                     "does not exist", None),
    "visualize_out_not_png": (["visualize", "--model", "MODEL", "--out", "README.md", "--data-dir", "DATA"],
                              "expected a .png file name", None),
    "visualize_out_unwritable": (["visualize", "--model", "MODEL", "--out", "/proc/x.png", "--data-dir", "DATA"],
                                 "cannot write in /proc", None),
    "visualize_out_is_a_folder": (["visualize", "--model", "MODEL", "--out", "plots.png", "--data-dir", "DATA"],
                                  "is a folder, not a file", _mkdir("plots.png")),
    "visualize_count_huge": (["visualize", "--model", "MODEL", "--count", "100000"], "--count", None),
    "visualize_dataset_out_under_a_file": (["visualize", "--dataset", "mnist", "--out", "README.md/d.png"],
                                           "is a file, not a folder", None),
    "visualize_dataset_from_disk": (["visualize", "--dataset", "folder:somewhere"],
                                    "visualize without --model shows the MNIST sets, not folder:somewhere", None),
    "evaluate_dataset_bad_spec": (["evaluate", "--model", "MODEL", "--dataset", "photos:x"], "--dataset", None),
    "evaluate_dataset_missing_folder": (["evaluate", "--model", "MODEL", "--dataset", "folder:nowhere"], "nowhere",
                                        None),
    # export-onnx
    "export_out_under_a_file": (["export-onnx", "--model", "MODEL", "-o", "README.md/x.onnx"],
                                "README.md is a file, not a folder", None),
    "export_out_unwritable": (["export-onnx", "--model", "MODEL", "-o", "/proc/x.onnx"], "cannot write in /proc", None),
    "export_out_missing_folder": (["export-onnx", "--model", "MODEL", "-o", "/nonexistent/dir/x.onnx"],
                                  "does not exist", None),
    "export_out_not_onnx": (["export-onnx", "--model", "MODEL", "-o", "README.md"], "expected a .onnx file name", None),
    "export_out_is_a_folder": (["export-onnx", "--model", "MODEL", "-o", "sub.onnx"], "is a folder, not a file",
                               _mkdir("sub.onnx")),
    "export_model_missing": (["export-onnx", "--model", "nothing", "-o", "x.onnx"], "no exported model", None),
    "export_opset_zero": (["export-onnx", "--model", "MODEL", "--opset", "0"], "--opset", None),
    # predict
    "predict_save_rectified_is_a_file": (["predict", "--model", "MODEL", "--save-rectified", "README.md", "digit.png"],
                                         "--save-rectified README.md: is a file, not a folder", None),
    "predict_save_rectified_under_a_file": (["predict", "--model", "MODEL", "--save-rectified", "README.md/r",
                                             "digit.png"], "README.md is a file, not a folder", None),
    "predict_save_rectified_two_inputs_one_file": (["predict", "--model", "MODEL", "--save-rectified", "out",
                                                    "a/1.png", "b/1.png"],
                                                   "a/1.png and b/1.png would both be saved as out/1_rectified.png",
                                                   _two_digits_named_1),
    "predict_corrupt_onnx": (["predict", "--model", "bad.onnx", "digit.png"], "bad.onnx",
                             _write("bad.onnx", b"\x08\x07garbage, not a protobuf" * 8)),
    "predict_unreadable_image": (["predict", "--model", "MODEL", "fake.png"], "fake.png",
                                 _write("fake.png", b"just text, named .png\n")),
    "predict_missing_image": (["predict", "--model", "MODEL", "nope.png"], "nope.png", None),
    "predict_symbol_binary": (["predict", "--model", "DAMAGED", "digit.png"], "not a valid MXNet symbol file",
                              _damaged_model(_binary, "model-symbol.json", False)),
    # serve
    "serve_port_too_big": (["serve", "--model", "MODEL", "--port", "99999"], "--port", None),
    "serve_model_missing": (["serve", "--model", "nothing", "--port", "0"], "no exported model", None),
    "serve_max_batch_zero": (["serve", "--model", "MODEL", "--max-batch", "0"], "--max-batch", None),
    # the command itself
    "no_command": ([], "required", None),
}


def _snapshot(root):
    """``{relative path: sha256 or 'dir'}`` of everything under ``root``."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory, sample):
    """One small exported model (1 epoch on a tiny real subset) and a small MNIST folder."""
    from stn_gluon.data.mnist import DigitDataset
    from stn_gluon.train.gluon import TrainConfig, fit

    root = tmp_path_factory.mktemp("cli_errors")
    data = DigitDataset(sample.train_images[:256], sample.train_labels[:256], sample.test_images[:64],
                        sample.test_labels[:64], source="test subset")
    fit(TrainConfig(epochs=1, batch_size=64, save_dir=str(root / "model"), progress=False), dataset=data,
        echo=lambda line: None)
    write_mnist_dir(root / "mnist", sample, 256, 64)
    return root


def _run_case(name, case_dir, root, processes):
    args, _, setup = CASES[name]
    case_dir.mkdir()
    (case_dir / "README.md").write_bytes(README)
    (case_dir / "digit.png").write_bytes(_png(np.eye(28) * 255))
    if setup is not None:
        setup(case_dir, root / "model")
    subst = {"MODEL": str(root / "model"), "DATA": str(root / "mnist"), "DAMAGED": str(case_dir / "damaged")}
    before = _snapshot(case_dir)
    proc = processes.run([subst.get(a, a) for a in args], cwd=case_dir, timeout=120)
    return dict(code=proc.returncode, out=proc.stdout, err=proc.stderr, before=before, after=_snapshot(case_dir))


@pytest.fixture(scope="session")
def table(cli_model, tmp_path_factory):
    """Every case's result, the processes run two at a time."""
    work = tmp_path_factory.mktemp("cli_cases")
    env = {k: v for k, v in os.environ.items() if k != "STN_GLUON_DATA"}
    env.update(MXNET_HOME=str(work / "mxnet_home"), STN_GLUON_CACHE=str(work / "cache"), PYTHONWARNINGS="ignore")
    model_before = _snapshot(cli_model)
    processes = CliProcesses(env, str(tmp_path_factory.mktemp("cli_processes")), count=2)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_run_case, name, work / name, cli_model, processes) for name in CASES}
            results = {name: future.result() for name, future in futures.items()}
    finally:
        processes.close()
    results["_model"] = (model_before, _snapshot(cli_model))
    return results


def test_the_table_is_broad():
    commands = {args[0] for args, _, _ in CASES.values() if args}
    assert {"train", "evaluate", "visualize", "export-onnx", "predict", "serve"} <= commands
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_bad_invocation_is_one_line(name, table):
    result, expect = table[name], CASES[name][1]
    err = result["err"]
    assert "Traceback" not in err, err
    assert result["code"] == 2, (result["code"], result["out"], err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert ONE_LINE.match(lines[0]), lines[0]
    assert expect in lines[0], lines[0]
    # the user's files as they were, nothing added (no folder made, no temporary file left)
    assert result["after"] == result["before"]


@pytest.mark.slow  # it reads the table: every case run (minutes), which belongs with the slow tests
def test_the_shared_model_is_untouched_and_nothing_was_made_outside(table):
    before, after = table["_model"]
    assert after == before
    assert not os.path.exists("/nonexistent")


def test_version(capsys):
    import stn_gluon

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"stn-gluon {stn_gluon.__version__}"


def test_ports_at_the_edges_of_the_range_parse():
    from stn_gluon.cli import build_parser

    for port in ("0", "65535"):
        assert build_parser().parse_args(["serve", "--model", "m", "--port", port]).port == int(port)


def test_visualize_by_default_writes_beside_not_over_the_run(cli_model, tmp_path, monkeypatch, capsys):
    run_grid = (cli_model / "model" / "stn_grid.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "visualize", "--model", cli_model / "model", "--data-dir", cli_model / "mnist",
                           "--count", "8")
    assert code == 0, err
    assert (tmp_path / "stn_grid-model-mnist.png").read_bytes()[:4] == b"\x89PNG"
    assert "Wrote stn_grid-model-mnist.png" in out
    assert (cli_model / "model" / "stn_grid.png").read_bytes() == run_grid


def test_save_rectified_makes_its_folder_and_says_so(cli_model, tmp_path, capsys):
    (tmp_path / "digit.png").write_bytes(_png(np.eye(28) * 255))
    target = tmp_path / "out" / "rectified"
    code, out, err = run_cli(capsys, "predict", "--model", cli_model / "model", "--json", "--save-rectified", target,
                           tmp_path / "digit.png")
    assert code == 0, err
    assert f"--save-rectified: created the folder {target}" in err
    assert json.loads(out)["predictions"][0]["rectified"] == str(target / "digit_rectified.png")
    assert (target / "digit_rectified.png").read_bytes()[:4] == b"\x89PNG"


def test_an_os_error_that_escapes_a_command_is_one_line(monkeypatch, capsys):
    from stn_gluon import cli

    def fails(path):
        def command(args):
            raise PermissionError(13, "Permission denied", path)
        return command

    monkeypatch.setitem(cli.COMMANDS, "evaluate", fails("/proc/.x.onnx.k2j4_a9.tmp"))
    code, _, err = run_cli(capsys, "evaluate", "--model", "m")
    assert code == 2 and err == "error: cannot write /proc/x.onnx: Permission denied\n"
    monkeypatch.setitem(cli.COMMANDS, "evaluate", fails("/data/in.png"))
    code, _, err = run_cli(capsys, "evaluate", "--model", "m")
    assert code == 2 and err == "error: /data/in.png: Permission denied\n"


def test_path_checks(tmp_path):
    from stn_gluon._runtime.errors import StnGluonError
    from stn_gluon._runtime.paths import readable_path, remove_empty_dirs, writable_dir, writable_file

    (tmp_path / "file.txt").write_text("x")
    notes = []
    created = writable_dir(str(tmp_path / "a" / "b"), "--save-dir", create=True, note=notes.append)
    assert created == [str(tmp_path / "a"), str(tmp_path / "a" / "b")] and (tmp_path / "a" / "b").is_dir()
    assert notes == [f"--save-dir: created the folder {tmp_path / 'a' / 'b'}"]
    remove_empty_dirs(created)
    assert not (tmp_path / "a").exists()
    assert writable_dir(str(tmp_path / "c" / "d"), "--out") == [] and not (tmp_path / "c").exists()  # checked only
    assert writable_file(str(tmp_path / "x.onnx"), "-o", suffix=".onnx") == str(tmp_path / "x.onnx")
    assert readable_path(str(tmp_path / "file.txt"), "--model", kind="file")
    for call, message in [
        (lambda: writable_dir(str(tmp_path / "file.txt"), "--save-dir"), "is a file, not a folder"),
        (lambda: writable_dir(str(tmp_path / "file.txt" / "x" / "y"), "--save-dir", create=True),
         "file.txt is a file, not a folder"),
        (lambda: writable_file(str(tmp_path / "no" / "x.png"), "--out"), "does not exist"),
        (lambda: writable_file(str(tmp_path), "--out"), "is a folder, not a file"),
        (lambda: writable_file(str(tmp_path / "file.txt"), "-o", suffix=".onnx"), "expected a .onnx file name"),
        (lambda: writable_file("/proc/x.onnx", "-o"), "cannot write in /proc"),
        (lambda: readable_path(str(tmp_path / "nope"), "--model"), "not found"),
        (lambda: readable_path(str(tmp_path / "file.txt"), "--data-dir", kind="dir"), "is a file, not a folder"),
        (lambda: readable_path(str(tmp_path), "--model", kind="file"), "is a folder, not a file"),
    ]:
        with pytest.raises(StnGluonError, match=re.escape(message)):
            call()
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]  # no probe file left behind


def test_bench_out_is_checked_first(tmp_path, capsys):
    (tmp_path / "notes.txt").write_bytes(README)
    code, _, err = run_cli(capsys, "bench", "distortions", "--out", tmp_path / "notes.txt")
    assert code == 2 and err.strip().endswith("is a file, not a folder")
    code, _, err = run_cli(capsys, "bench", "speed", "--out", tmp_path / "notes.txt" / "speed")
    assert code == 2 and err.strip().endswith("notes.txt is a file, not a folder")
    code, _, err = run_cli(capsys, "bench", "distortions", "--datasets", "nonsense", "--out", tmp_path / "new" / "b")
    assert code == 2 and "nonsense" in err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and (tmp_path / "notes.txt").read_bytes() == README
