"""Files written with the usual permissions; --download offline is one line and creates nothing."""
import os
import stat
import subprocess
import sys

import pytest

from stn_gluon._runtime.files import atomic_path, atomic_write_text, current_umask, write_json


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_a_plain_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        atomic_write_text(str(tmp_path / "atomic.txt"), "x")
        write_json(str(tmp_path / "meta.json"), {"a": 1})
        with atomic_path(str(tmp_path / "raw.bin")) as tmp:  # a writer that opens the temporary name itself
            with open(tmp, "wb") as f:
                f.write(b"\0")
    finally:
        os.umask(old)
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert plain == 0o666 & ~umask
    for name in ("atomic.txt", "meta.json", "raw.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == plain, name
    assert sorted(os.listdir(tmp_path)) == ["atomic.txt", "meta.json", "plain.txt", "raw.bin"]


def test_a_trained_runs_files_are_readable_by_others(tmp_path, sample):
    from stn_gluon.data.mnist import DigitDataset
    from stn_gluon.train.gluon import TrainConfig, fit

    old = os.umask(0o022)
    try:
        data = DigitDataset(sample.train_images[:128], sample.train_labels[:128], sample.test_images[:32],
                            sample.test_labels[:32], source="tiny")
        fit(TrainConfig(epochs=1, save_dir=str(tmp_path / "run"), progress=False), dataset=data, echo=lambda s: None)
    finally:
        os.umask(old)
    modes = {f: stat.S_IMODE((tmp_path / "run" / f).stat().st_mode) for f in os.listdir(tmp_path / "run")}
    assert {"checkpoint.zip", "metrics.json", "model.json", "curves.png", "model-0000.params"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.slow
def test_download_offline_is_one_line_and_creates_nothing(tmp_path):
    home = tmp_path / "mxnet_home"
    env = dict(os.environ, MXNET_HOME=str(home), MXNET_GLUON_REPO="http://127.0.0.1:9/")  # nothing listens there
    env.pop("STN_GLUON_DATA", None)
    out = subprocess.run([sys.executable, "-m", "stn_gluon", "train", "--download", "--epochs", "1",
                          "--save-dir", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: downloading MNIST failed ("), out.stderr
    assert len(lines[0]) < 300 and "127.0.0.1" in lines[0] and "nothing was written" in lines[0]
    assert "retrying" not in out.stdout and "Downloading" not in out.stdout
    assert not home.exists() and not (tmp_path / "run").exists()
    assert sorted(os.listdir(tmp_path)) == []
