import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import write_mnist_dir
from stn_gluon.cli import main


def run_cli(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory, sample):
    """One `stn-gluon train --epochs 1` run (and its MNIST folder), made once: tests get copies (``trained``)."""
    root = tmp_path_factory.mktemp("cli_trained")
    data = write_mnist_dir(root / "mnist", sample, 600, 200)  # what the mnist_dir fixture holds
    assert main(["train", "--epochs", "1", "--data-dir", str(data), "--save-dir", str(root / "run"),
                 "--no-progress"]) == 0
    return root / "run"


@pytest.fixture
def trained(trained_once, tmp_path):
    """This test's own copy of the trained run (tests damage it)."""
    return shutil.copytree(trained_once, tmp_path / "run")


def test_train_evaluate_visualize(trained, mnist_dir, capsys, tmp_path):
    metrics = json.load(open(trained / "metrics.json"))
    code, out, _ = run_cli(capsys, "evaluate", "--model", str(trained), "--data-dir", str(mnist_dir), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["test_correct"] == metrics["test_correct"] and result["test_total"] == 200
    # the export prefix and the -symbol.json file name the same model
    for ref in (trained / "model", trained / "model-symbol.json"):
        code, out, _ = run_cli(capsys, "evaluate", "--model", str(ref), "--data-dir", str(mnist_dir))
        assert code == 0 and f"Accuracy: {metrics['test_correct']}/200" in out
    png = tmp_path / "grid.png"
    code, out, _ = run_cli(capsys, "visualize", "--model", str(trained), "--data-dir", str(mnist_dir),
                           "--out", str(png), "--count", "16")
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_has_no_stn_to_visualize(tmp_path, mnist_dir, capsys):
    save = tmp_path / "base"
    code, _, err = run_cli(capsys, "train", "--no-stn", "--epochs", "1", "--data-dir", str(mnist_dir),
                           "--save-dir", str(save), "--no-progress")
    assert code == 0, err
    assert json.load(open(save / "metrics.json"))["model"] == "lenet"
    assert not (save / "stn_grid.png").exists()
    code, _, err = run_cli(capsys, "visualize", "--model", str(save), "--data-dir", str(mnist_dir))
    assert code == 2 and "no spatial transformer" in err


def _damage(path, how):
    raw = path.read_bytes()
    path.write_bytes(b"{not json" if how == "garbage" else raw[: len(raw) // 2])


@pytest.mark.parametrize("case", [
    "epochs_zero", "lr_text", "lr_nan", "gpu_missing", "ctx_garbage", "ctx_ids", "data_dir_missing",
    "data_dir_empty", "optimizer", "model_missing", "symbol_garbage", "params_truncated",
    "checkpoint_damaged", "no_command", "unknown_model", "batch_too_big",
])
def test_bad_input_is_one_clear_line(case, trained, mnist_dir, tmp_path, capsys):
    data = ["--data-dir", str(mnist_dir)]
    train = ["train", "--epochs", "1", "--no-progress", "--save-dir", str(tmp_path / "x")] + data
    empty = tmp_path / "empty"
    empty.mkdir()
    args, expect = {
        "epochs_zero": (train + ["--epochs", "0"], "--epochs"),
        "lr_text": (train + ["--lr", "fast"], "--lr"),
        "lr_nan": (train + ["--lr", "nan"], "--lr"),
        "gpu_missing": (train + ["--ctx", "gpu:0"], "gpu 0 requested"),
        "ctx_garbage": (train + ["--ctx", "tpu"], "--ctx"),
        "ctx_ids": (train + ["--ctx", "cpu:a"], "integers"),
        "data_dir_missing": (train[:-2] + ["--data-dir", str(tmp_path / "nope")], "not a directory"),
        "data_dir_empty": (train[:-2] + ["--data-dir", str(empty)], "lacks"),
        "optimizer": (train + ["--optimizer", "rmsprop-ish"], "--optimizer"),
        "model_missing": (["evaluate", "--model", str(tmp_path / "nothing")] + data, "no exported model"),
        "symbol_garbage": (["evaluate", "--model", str(trained)] + data, "symbol"),
        "params_truncated": (["evaluate", "--model", str(trained)] + data, "model-0000.params"),
        "checkpoint_damaged": (["train", "--epochs", "1", "--no-progress", "--save-dir", str(trained),
                                "--resume"] + data, "damaged"),
        "no_command": ([], "required"),
        "unknown_model": (train + ["--model", "stn_nonexistent_net"], "unknown model"),
        "batch_too_big": (train + ["--batch-size", "100000"], "larger than the training set"),
    }[case]
    if case == "symbol_garbage":
        _damage(trained / "model-symbol.json", "garbage")
    if case == "params_truncated":
        _damage(trained / "model-0000.params", "truncate")
    if case == "checkpoint_damaged":
        _damage(trained / "checkpoint.zip", "truncate")
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("!") and "EMBEDDED" not in l]
    assert len(lines) == 1, err
    assert "error" in lines[0] and expect in lines[0], lines[0]
    assert "Traceback" not in err


def test_console_script_and_module_entry_have_no_traceback(tmp_path):
    env = dict(os.environ, STN_GLUON_DATA=str(tmp_path / "missing"))
    out = subprocess.run([sys.executable, "-m", "stn_gluon", "train", "--epochs", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: STN_GLUON_DATA: {tmp_path / 'missing'} is not a directory"]
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "train_gluon.py")
    out = subprocess.run([sys.executable, script, "--lr", "x"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--lr" in out.stderr


def test_time_to_accuracy_command_takes_a_shorter_schedule(tmp_path, mnist_dir, capsys):
    out = tmp_path / "tta"
    code, stdout, err = run_cli(capsys, "bench", "time-to-accuracy", "--target", "0.05", "--epochs", "2",
                                "--data-dir", str(mnist_dir), "--out", str(out))
    assert code == 0, err
    result = json.load(open(out / "results.json"))["result"]
    assert result["recipe"]["epochs"] == 2 and result["epoch"] == 1 and result["seconds"] > 0
    assert "(after 1 of 2 epochs of the default recipe," in (out / "results.md").read_text()


def test_time_to_accuracy_command_runs_the_fast_recipe(tmp_path, mnist_dir, capsys):
    from stn_gluon.train.recipes import RECIPES

    out = tmp_path / "tta"
    code, stdout, err = run_cli(capsys, "bench", "time-to-accuracy", "--recipe", "fast", "--target", "0.05",
                                "--data-dir", str(mnist_dir), "--out", str(out))
    assert code == 0, err
    result = json.load(open(out / "results.json"))["result"]
    assert result["recipe_name"] == "fast" and result["seconds"] > result["startup_seconds"] > 0
    assert {k: result["recipe"][k] for k in RECIPES["fast"] if k in result["recipe"]} == \
        {k: v for k, v in RECIPES["fast"].items() if k in result["recipe"]}
    assert result["epoch"] == 2  # tested after the last (half) epoch only
    assert "from process start" in stdout
