"""The synthetic traffic-sign set (stn_gluon.data.signs, ``stn-gluon make-dataset signs``): small sets, seconds."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from stn_gluon._runtime.errors import ConfigError, StnGluonError
from stn_gluon.data import signs
from stn_gluon.data.signs import (SIGNS, SignsConfig, make_signs_dataset, parse_scale, parse_size, render_sign,
                                  sign_image)

SMALL = dict(classes=3, train_per_class=4, test_per_class=2, size="24-40", workers=1)


def _tree(root):
    """``{relative path: sha256}`` of every file under ``root``."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found



def test_43_distinct_signs_of_every_shape():
    assert len(SIGNS) == 43 and len({s.name for s in SIGNS}) == 43
    assert {s.shape for s in SIGNS} == {"circle", "triangle_up", "triangle_down", "octagon", "diamond", "square",
                                        "rect"}
    speeds = [s for s in SIGNS if s.name.startswith("speed_")]
    assert len(speeds) >= 6 and len({(s.shape, s.scheme) for s in speeds}) == 1  # only the number tells them apart
    tiles = np.stack([render_sign(i, 48).astype(np.int16) for i in range(len(SIGNS))])
    assert tiles.shape == (43, 48, 48, 4) and tiles.dtype == np.int16
    for i in range(len(SIGNS)):
        differing = (np.abs(tiles - tiles[i]).max(axis=3) > 60).mean(axis=(1, 2))
        differing[i] = 1.0
        assert differing.min() > 0.01, (SIGNS[i].name, SIGNS[int(differing.argmin())].name)


def test_a_sample_is_a_function_of_its_seed_split_class_and_index():
    a = sign_image(5, 7, "train", 3)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert 28 <= a.shape[0] <= 64 and 28 <= a.shape[1] <= 64
    assert np.array_equal(a, sign_image(5, 7, "train", 3))
    for other in (sign_image(5, 8, "train", 3), sign_image(5, 7, "test", 3), sign_image(5, 7, "train", 4)):
        assert other.shape != a.shape or np.abs(other.astype(int) - a).mean() > 5
    assert sign_image(0, 0, "train", 0, (32, 32, 32, 32)).shape == (32, 32, 3)
    assert sign_image(0, 0, "train", 0, parse_size("30,50")).shape == (30, 50, 3)
    sizes = {sign_image(1, 0, "train", i, parse_size("28-64")).shape[:2] for i in range(12)}
    assert len(sizes) > 6 and all(28 <= s <= 64 for hw in sizes for s in hw)


def test_samples_vary_in_place_scale_and_light():
    """The sign is not always centred nor the same size, and the frames differ in brightness."""
    images = [sign_image(33, 0, "train", i, (48, 48, 48, 48)).astype(np.float32) for i in range(24)]
    blue = [(im[..., 2] - im[..., :2].max(axis=2)) > 25 for im in images]  # the blue disc's pixels
    found = [m for m in blue if m.sum() > 20]
    assert len(found) > 12
    centres = np.array([np.argwhere(m).mean(axis=0) for m in found])
    areas = np.array([m.sum() for m in found])
    assert centres.std(axis=0).min() > 2.0 and areas.max() > 2 * areas.min()
    brightness = [im.mean() for im in images]
    assert max(brightness) - min(brightness) > 40


def test_sign_scale_sets_the_signs_size():
    """The sign's share of the frame follows sign_scale: the blue disc covers far more of it at 0.9 than at 0.3
    (the same scenes otherwise: the scale is one draw of each image's generator)."""
    def blue_share(scale):
        images = [sign_image(33, 0, "train", i, (48, 48, 48, 48), scale).astype(np.int16) for i in range(8)]
        return np.median([((im[..., 2] - im[..., :2].max(axis=2)) > 25).mean() for im in images])

    assert blue_share((0.9, 0.9)) > 4 * blue_share((0.3, 0.3))
    assert parse_scale("0.5") == (0.5, 0.5) and parse_scale("0.2-1") == (0.2, 1.0)
    for bad in ("", "x", "0.05", "0.8-0.3", "1.5", "0.1-0.2-0.3"):
        with pytest.raises(ValueError):
            parse_scale(bad)


def test_parse_size():
    assert parse_size("32") == (32, 32, 32, 32)
    assert parse_size("30,50") == (30, 30, 50, 50)
    assert parse_size("28-64") == (28, 64, 28, 64)
    for bad in ("", "x", "4", "64-28", "32,", "1-2-3", "600"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_layout_counts_names_and_rec(tmp_path):
    import mxnet as mx

    out = tmp_path / "signs"
    manifest = make_signs_dataset(str(out), SignsConfig(rec=True, **SMALL))
    folders = [signs.folder_name(label, i) for label, i in enumerate(signs.class_subset(3))]
    assert folders == sorted(folders) and folders[0] == "00_speed_20"
    assert sorted(os.listdir(out)) == ["dataset.json", "names.txt", "test", "test.idx", "test.lst", "test.rec",
                                       "train", "train.idx", "train.lst", "train.rec"]
    assert (out / "names.txt").read_text().splitlines() == manifest["classes"] == [f[3:] for f in folders]
    assert json.loads((out / "dataset.json").read_text())["generator"] == signs.GENERATOR
    for split, count in (("train", 4), ("test", 2)):
        assert sorted(os.listdir(out / split)) == folders
        for folder in folders:
            assert sorted(os.listdir(out / split / folder)) == [f"{i:05d}.png" for i in range(count)]
        lines = (out / f"{split}.lst").read_text().splitlines()
        assert len(lines) == 3 * count
        reader = mx.recordio.MXIndexedRecordIO(str(out / f"{split}.idx"), str(out / f"{split}.rec"), "r")
        assert sorted(reader.keys) == list(range(3 * count))
        for line in lines:
            key, label, rel = line.split("\t")
            header, bgr = mx.recordio.unpack_img(reader.read_idx(int(key)))
            png = np.asarray(Image.open(out / split / rel))
            assert header.label == float(label) == folders.index(rel.split("/")[0]) and header.id == int(key)
            assert png.ndim == 3 and png.shape[2] == 3 and 24 <= png.shape[0] <= 40
            assert np.array_equal(bgr[..., ::-1], png)  # the same pixels, cv2's BGR order
        reader.close()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    make_signs_dataset(str(one), SignsConfig(**SMALL))
    make_signs_dataset(str(two), SignsConfig(**dict(SMALL, workers=2)))
    assert _tree(one) == _tree(two) and len(_tree(one)) == 3 * 6 + 2
    make_signs_dataset(str(tmp_path / "other"), SignsConfig(**dict(SMALL, seed=1)))
    other = _tree(tmp_path / "other")
    pngs = [k for k in other if k.endswith(".png")]
    assert all(other[k] != _tree(one)[k] for k in pngs)
    assert sorted(os.listdir(tmp_path)) == ["one", "other", "two"]  # no temporary folder left


def test_refuses_a_folder_in_use_and_replaces_only_its_own(tmp_path, monkeypatch):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "README.md").write_text("mine\n")
    for overwrite in (False, True):
        with pytest.raises(StnGluonError, match="not empty|did not write") as err:
            make_signs_dataset(str(mine), SignsConfig(overwrite=overwrite, **SMALL))
        assert "\n" not in str(err.value) and "--overwrite" in err.value.for_cli()
    assert os.listdir(mine) == ["README.md"] and sorted(os.listdir(tmp_path)) == ["notes"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StnGluonError, match="is a file"):
        make_signs_dataset(str(tmp_path / "file"), SignsConfig(**SMALL))
    empty = tmp_path / "empty"
    empty.mkdir()
    make_signs_dataset(str(empty), SignsConfig(**SMALL))
    before = _tree(empty)
    with pytest.raises(StnGluonError, match="not empty"):
        make_signs_dataset(str(empty), SignsConfig(**dict(SMALL, seed=3)))
    assert _tree(empty) == before
    make_signs_dataset(str(empty), SignsConfig(overwrite=True, **dict(SMALL, seed=3, classes=2)))
    after = _tree(empty)
    assert after != before and sorted(os.listdir(empty / "train")) == ["00_speed_20", "01_caution"]
    assert sorted(os.listdir(tmp_path)) == ["empty", "file", "notes"]
    monkeypatch.chdir(empty / "train")
    for here in (".", "..", str(empty)):
        with pytest.raises(StnGluonError, match="current folder"):
            make_signs_dataset(here, SignsConfig(overwrite=True, **SMALL))
    assert _tree(empty) == after


def test_bad_settings_are_config_errors():
    for field, value in (("classes", 1), ("classes", 44), ("train_per_class", 0), ("size", "7"), ("seed", -1),
                         ("sign_scale", "0.9-0.2")):
        with pytest.raises(ConfigError, match=field):
            make_signs_dataset("/nonexistent/never", SignsConfig(**{field: value}))
    assert not os.path.exists("/nonexistent")


def test_cli_writes_and_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "ds"
    code, stdout, _ = run_cli(capsys, "make-dataset", "signs", out, "--classes", "2", "--train-per-class", "2",
                               "--test-per-class", "1", "--size", "24", "--seed", "4", "--workers", "1")
    assert code == 0 and f"folder:{out}" in stdout
    assert {Image.open(out / "train" / "01_caution" / "00001.png").size} == {(24, 24)}
    before = _tree(out)
    for args, expect in ((["signs", out], "--overwrite"), (["signs", tmp_path / "x", "--classes", "50"], "--classes"),
                         (["signs", tmp_path / "x", "--size", "9-8"], "--size"),
                         (["signs", tmp_path / "x", "--train-per-class", "0"], "--train-per-class"),
                         (["cards", tmp_path / "x"], "invalid choice")):
        code, _, err = run_cli(capsys, "make-dataset", *args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "error:" in lines[0] and expect in lines[0], (args, err)
    assert _tree(out) == before and sorted(os.listdir(tmp_path)) == ["ds"]


def test_rec_is_byte_for_byte_what_im2rec_writes(tmp_path, capsys):
    """MXNet's own tools/im2rec.py (``--list --recursive --no-shuffle``, then ``--encoding .png --quality 3``)
    on the written train/ folder gives the same .lst, .rec and .idx."""
    import argparse
    import queue

    import mxnet as mx
    import mxnet.tools.im2rec as im2rec

    out = tmp_path / "ds"
    make_signs_dataset(str(out), SignsConfig(rec=True, **dict(SMALL, train_per_class=3)))
    prefix = str(tmp_path / "im2rec_train")
    args = argparse.Namespace(root=str(out / "train"), prefix=prefix, recursive=True, exts=[".jpeg", ".jpg", ".png"],
                              shuffle=False, chunks=1, train_ratio=1.0, test_ratio=0.0, pass_through=False, color=1,
                              center_crop=False, resize=0, quality=3, encoding=".png", pack_label=False)
    im2rec.make_list(args)
    assert open(prefix + ".lst").read() == (out / "train.lst").read_text()
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    encoded: "queue.Queue" = queue.Queue()
    for i, item in enumerate(im2rec.read_list(prefix + ".lst")):  # im2rec's single-process loop
        im2rec.image_encode(args, i, item, encoded)
        writer.write_idx(item[0], encoded.get()[1])
    writer.close()
    capsys.readouterr()
    for ext in (".rec", ".idx"):
        assert open(prefix + ext, "rb").read() == (out / f"train{ext}").read_bytes()


def test_sign_pose_replays_the_pose_each_image_was_drawn_with(monkeypatch):
    """scripts/sign_poses.py compares the STN with these poses: they must be the drawn ones, image by image."""
    from stn_gluon.data import signs as signs_module

    drawn = []
    real = signs_module._pose
    monkeypatch.setattr(signs_module, "_pose", lambda *args: drawn.append(real(*args)) or drawn[-1])
    for sign, index in ((5, 3), (17, 20), (42, 0)):
        signs_module.sign_image(sign, 7, "test", index, (28, 64, 28, 64), (0.35, 0.8))
        pose = signs_module.sign_pose(sign, 7, "test", index, (28, 64, 28, 64), (0.35, 0.8))
        image = drawn[-1]
        assert (pose.width, pose.height, pose.side, pose.cx, pose.cy, pose.rotation) == \
            (image.width, image.height, image.side, image.cx, image.cy, image.rotation)
        assert np.array_equal(pose.jitter, image.jitter) and -15 <= pose.rotation <= 15
    assert len({p.rotation for p in drawn}) == 3


def test_max_rotation_bounds_the_rotation_and_changes_nothing_else(tmp_path):
    poses = {r: signs.sign_pose(3, 0, "train", 5, rotation=r) for r in (0.0, 15.0, 45.0)}
    assert poses[0.0].rotation == 0.0 and abs(poses[15.0].rotation) <= 15
    assert poses[45.0].rotation == pytest.approx(3 * poses[15.0].rotation) and poses[15.0].rotation != 0
    for r in (0.0, 45.0):
        assert (poses[r].side, poses[r].cx, poses[r].cy) == (poses[15.0].side, poses[15.0].cx, poses[15.0].cy)
        assert np.array_equal(poses[r].jitter, poses[15.0].jitter)
    assert np.array_equal(signs.sign_image(3, 0, "train", 5), signs.sign_image(3, 0, "train", 5, rotation=15.0))
    assert not np.array_equal(signs.sign_image(3, 0, "train", 5), signs.sign_image(3, 0, "train", 5, rotation=45.0))
    manifest = make_signs_dataset(str(tmp_path / "s"), SignsConfig(max_rotation=45.0, **SMALL))
    assert manifest["max_rotation"] == 45.0 == json.loads((tmp_path / "s" / "dataset.json").read_text())["max_rotation"]


def test_sign_poses_script_reads_the_poses_in_the_loaders_order(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sign_poses", os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "sign_poses.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "s"
    make_signs_dataset(str(out), SignsConfig(max_rotation=30.0, **SMALL))
    per_class = json.loads((out / "dataset.json").read_text())["test_per_class"]
    labels = np.repeat(np.arange(3), per_class)
    poses = script.drawn_poses(str(out), labels)
    subset = signs.class_subset(3)
    for k, label in enumerate(labels):
        want = signs.sign_pose(subset[label], 0, "test", k % per_class, parse_size(SMALL["size"]), parse_scale("0.35-0.8"),
                               30.0)
        assert poses[k, 0] == want.rotation and poses[k, 1] == want.side / want.width
    with pytest.raises(SystemExit, match="not 2 images per class in order"):
        script.drawn_poses(str(out), labels[::-1])
