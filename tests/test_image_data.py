"""Datasets from disk (folder:, csv:, rec:): loaders, cache, streaming, colour jitter, errors, training on them."""
import io
import json
import os

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import write_idx
from stn_gluon._runtime.errors import ConfigError, DataError
from stn_gluon.data import sources
from stn_gluon.data.augment import ColorJitter
from stn_gluon.data.images import FileImages
from stn_gluon.data.mnist import ArrayBatches, normalize
from stn_gluon.data.normalization import as_channel_values, channel_stats, normalize_unit
from stn_gluon.data.sources import LoadOptions, load_images, split_off
from stn_gluon.data.streaming import StreamBatches, make_batches

SIZES = ((20, 30), (24, 24), (30, 20), (24, 24))


def colour_of(k, i):
    return (40 + 80 * k, 215 - 60 * k, 20 * i)


def image(k, i, size, grey=False):
    """A solid image of class ``k``, sample ``i``: (H, W, 3) colour, or (H, W) grey."""
    if grey:
        return np.full(size, 30 + 70 * k + i, np.uint8)
    return np.full(size + (3,), colour_of(k, i), np.uint8)


def write_images(folder, classes, per_class, grey=False, ext=".png", start=0):
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.fromarray(image(k, i, SIZES[i % len(SIZES)], grey)).save(folder / name / f"{i:03d}{ext}")
    return folder


def opts(tmp_path, **kw):
    return LoadOptions(cache_dir=str(tmp_path / "cache"), **kw)


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_rec(path, items):
    """An im2rec-style ``.rec`` + ``.idx``: ``items`` of (image array, label), written with mx.recordio."""
    rec = mx.recordio.MXIndexedRecordIO(str(path)[:-4] + ".idx", str(path), "w")
    for i, (array, label) in enumerate(items):
        rec.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), i, 0), png_bytes(array)))
    rec.close()
    return path


def test_folder_colour_mixed_sizes_splits_and_statistics(tmp_path):
    root = tmp_path / "pets"
    write_images(root / "train", ["cat", "dog", "emu"], 6)
    write_images(root / "test", ["cat", "dog", "emu"], 2, start=6)
    d = load_images(f"folder:{root}", opts(tmp_path, val_split=0.34))
    assert d.classes == ["cat", "dog", "emu"] and d.num_classes == 3 and not d.digits
    assert d.image_shape == (3, 24, 24)  # the median of 20x30, 24x24, 30x20, 24x24...
    assert any("median" in n for n in d.notes) and any("Channels: 3" in n for n in d.notes)
    assert (len(d.train_labels), len(d.val_labels), len(d.test_labels)) == (12, 6, 6)
    assert np.bincount(d.val_labels).tolist() == [2, 2, 2]  # stratified
    assert d.train_images.dtype == np.uint8 and d.train_images.shape == (12, 3, 24, 24)
    # solid images keep their colour through the resize, and the labels follow the folders
    for x, y in zip(d.test_images, d.test_labels):
        assert tuple(x[:, 5, 5]) in {colour_of(int(y), 6), colour_of(int(y), 7)}
    mean, std = channel_stats(d.train_images)
    assert d.mean == mean and d.std == std and len(d.mean) == 3
    assert d.describe().endswith("(12 train, 6 val, 6 test)")
    # the val split is seeded: the same again, another with another seed
    again = load_images(f"folder:{root}", opts(tmp_path, val_split=0.34))
    np.testing.assert_array_equal(again.val_images, d.val_images)
    kept, held = split_off(np.repeat(np.arange(3), 6), 0.34, seed=1)
    assert len(held) == 6 and not set(kept) & set(held)


def test_grey_folder_other_formats_input_size_and_channels(tmp_path):
    root = tmp_path / "grey"
    write_images(root / "train", ["a", "b"], 3, grey=True, ext=".bmp")
    write_images(root / "train", ["a", "b"], 3, grey=True, ext=".ppm", start=3)
    write_images(root / "test", ["a", "b"], 2, grey=True, ext=".jpg")
    (root / "train" / "a" / "notes.csv").write_text("ignored\n")
    d = load_images(f"folder:{root}", opts(tmp_path, input_size=(16, 12), val_split=0))
    assert d.image_shape == (1, 16, 12) and len(d.train_labels) == 12 and d.val_labels is None
    assert d.train_images[0, 0, 3, 3] == 30  # class a, sample 0, as written (lossless formats)
    rgb = load_images(f"folder:{root}", opts(tmp_path, input_size=(16, 12), channels="3", val_split=0))
    assert rgb.image_shape == (3, 16, 12)
    assert (rgb.train_images[:, 0] == rgb.train_images[:, 2]).all()


def test_csv_gtsrb_layout_maps_class_ids_onto_class_folders(tmp_path):
    train = write_images(tmp_path / "Final_Training" / "Images", ["00000", "00001", "00002"], 4)
    (train / "00001" / "GT-00001.csv").write_text("Filename;ClassId\n")  # GTSRB's per-class CSVs: ignored
    test = tmp_path / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, k in enumerate([2, 0, 1, 2, 1]):
        Image.fromarray(image(k, 9, (26, 26))).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;26;26;1;1;25;25;{k}")
    (test / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    d = load_images(f"folder:{train}", opts(tmp_path, test=f"csv:{test / 'GT-final_test.csv'}", input_size=(24, 24)))
    assert d.classes == ["00000", "00001", "00002"]
    assert d.test_labels.tolist() == [2, 0, 1, 2, 1]
    assert tuple(d.test_images[0][:, 4, 4]) == colour_of(2, 9)
    assert "+ test csv:" in d.source and d.val_labels is None  # the default 0.1 of 4 images a class: none
    # a CSV as the training set: ',' separated, path/label columns, names as labels; another column names
    listing = tmp_path / "train.csv"
    listing.write_text("path,label,extra\n" + "".join(
        f"Final_Training/Images/0000{k}/{i:03d}.png,{name},x\n" for k, name in enumerate(["cat", "dog", "emu"])
        for i in range(4)))
    c = load_images(f"csv:{listing}", opts(tmp_path, val_split=0, test=f"csv:{test / 'GT-final_test.csv'}"))
    assert c.classes == ["cat", "dog", "emu"] and c.test_labels.tolist() == [2, 0, 1, 2, 1]  # ids: positions
    tabbed = tmp_path / "tabbed.tsv"
    tabbed.write_text("image\tcategory\n" + "".join(f"Final_Training/Images/00002/{i:03d}.png\t7\n" for i in range(2))
                      + "".join(f"Final_Training/Images/00000/{i:03d}.png\t3\n" for i in range(2)))
    t = load_images(f"csv:{tabbed}", opts(tmp_path, val_split=0.5))
    assert t.classes == ["3", "7"] and sorted(t.train_labels.tolist()) == [0, 1]


def test_rec_written_with_recordio_grey_and_colour(tmp_path):
    items = [(image(k, i, SIZES[i % 4], grey=(i % 2 == 0)), k) for k in range(3) for i in range(4)]
    rec = write_rec(tmp_path / "data.rec", items)
    names = tmp_path / "names.txt"
    names.write_text("stop\nyield\n\nahead\n")
    d = load_images(f"rec:{rec}", opts(tmp_path, val_split=0, test=f"rec:{rec}", class_names=str(names)))
    assert d.classes == ["stop", "yield", "ahead"] and d.image_shape == (3, 24, 24)  # colour found: 3 channels
    np.testing.assert_array_equal(d.train_labels, [k for _, k in items])
    np.testing.assert_array_equal(d.test_labels, d.train_labels)
    grey = d.train_images[0]
    assert (grey[0] == grey[1]).all() and grey[0, 0, 0] == 30  # a grey record, read into 3 equal channels
    assert tuple(d.train_images[1][:, 0, 0]) == colour_of(0, 1)


def test_cache_hits_until_a_file_changes(tmp_path, monkeypatch):
    root = write_images(tmp_path / "data" / "train", ["a", "b"], 4).parent
    write_images(root / "test", ["a", "b"], 1)
    calls = []
    real = sources.decode_many

    def counting(*args, **kw):
        calls.append(len(args[0]))
        return real(*args, **kw)

    monkeypatch.setattr(sources, "decode_many", counting)
    first = load_images(f"folder:{root}", opts(tmp_path))
    assert calls == [8, 2]
    second = load_images(f"folder:{root}", opts(tmp_path))
    assert calls == [8, 2] and any("from the cache" in n for n in second.notes)
    np.testing.assert_array_equal(first.train_images, second.train_images)
    cached = os.listdir(tmp_path / "cache" / "images")
    assert len(cached) == 1 and cached[0].endswith(".npz")
    picture = root / "train" / "b" / "002.png"
    os.utime(picture, ns=(picture.stat().st_atime_ns, picture.stat().st_mtime_ns + 10**9))
    load_images(f"folder:{root}", opts(tmp_path))
    assert calls == [8, 2, 8, 2]
    assert len(os.listdir(tmp_path / "cache" / "images")) == 1  # the stale version replaced
    assert os.listdir(tmp_path / "cache" / "images") != cached
    load_images(f"folder:{root}", opts(tmp_path, input_size=(8, 8)))  # other decoding options: another entry
    assert calls == [8, 2, 8, 2, 8, 2] and len(os.listdir(tmp_path / "cache" / "images")) == 2
    load_images(f"folder:{root}", opts(tmp_path))  # ... beside the first, which still hits
    assert calls == [8, 2, 8, 2, 8, 2]


def test_a_set_over_the_memory_limit_streams_the_same_batches(tmp_path, monkeypatch):
    root = write_images(tmp_path / "data" / "train", ["a", "b", "c"], 8).parent
    write_images(root / "test", ["a", "b", "c"], 2)
    memory = load_images(f"folder:{root}", opts(tmp_path, val_split=0.25))
    noise = np.random.RandomState(0).randint(0, 256, (24, 24, 3)).astype(np.uint8)
    (root / "train" / "b" / "zzz.png").write_bytes(png_bytes(noise)[:1000])  # truncated: found before training
    with pytest.raises(DataError, match="1 unreadable image"):
        load_images(f"folder:{root}", opts(tmp_path, val_split=0.25, memory_limit_mb=0.001))
    calls = []
    real = sources.verify_many
    monkeypatch.setattr(sources, "verify_many", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(2):  # decoded once to check every image, then where they are is read from the cache
        streamed = load_images(f"folder:{root}", opts(tmp_path, val_split=0.25, memory_limit_mb=0.001,
                                                      skip_unreadable=True))
    assert len(calls) == 2 and streamed.skipped == 1  # train and test, once
    assert isinstance(streamed.train_images, FileImages) and any("Streaming" in n for n in streamed.notes)
    assert any("where the 30 images are" in n for n in streamed.notes)
    assert streamed.mean == memory.mean and streamed.std == memory.std
    np.testing.assert_array_equal(streamed.val_images[:], memory.val_images)
    kw = dict(shuffle=True, seed=3, last_batch="discard", mean=memory.mean, std=memory.std, shard=(1, 2))
    for workers in (0, 2):
        stream = make_batches(streamed.train_images, streamed.train_labels, 4, workers=workers, **kw)
        assert isinstance(stream, StreamBatches)
        arrays = ArrayBatches(memory.train_images, memory.train_labels, 4, **kw)
        assert len(stream) == len(arrays) == 2 and stream.num_samples == arrays.num_samples
        for epoch in (0, 1):
            stream.set_epoch(epoch)
            arrays.set_epoch(epoch)
            got, want = list(stream), list(arrays)
            assert len(got) == len(want)
            for (x, y), (u, v) in zip(got, want):
                np.testing.assert_array_equal(x.asnumpy(), u.asnumpy())
                np.testing.assert_array_equal(y.asnumpy(), v.asnumpy())


def test_color_jitter_is_seeded_sharded_and_stays_in_range():
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, (8, 3, 6, 6)).astype(np.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x = mx.nd.array(normalize(pixels, mean, std))
    jitter = ColorJitter(0.4, mean, std, seed=5)
    jitter.set_epoch(2)
    out = jitter(x).asnumpy()
    back = out * np.asarray(std).reshape(1, 3, 1, 1) + np.asarray(mean).reshape(1, 3, 1, 1)
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5 and np.abs(out - x.asnumpy()).max() > 0.1
    jitter.set_epoch(2)
    np.testing.assert_allclose(jitter(x).asnumpy(), out, atol=1e-6)  # the same epoch: the same draws
    jitter.set_epoch(3)
    assert np.abs(jitter(x).asnumpy() - out).max() > 1e-3
    halves = []
    for rank in (0, 1):  # two workers, each half of the global batch: together the single process's batch
        part = ColorJitter(0.4, mean, std, seed=5, shard=(rank, 2))
        part.set_epoch(2)
        halves.append(part(x[rank * 4:(rank + 1) * 4]).asnumpy())
    np.testing.assert_allclose(np.concatenate(halves), out, atol=1e-5)
    none = ColorJitter(0.0, mean, std)
    np.testing.assert_allclose(none(x).asnumpy(), x.asnumpy(), atol=1e-5)  # strength 0: unchanged
    grey = mx.nd.array(normalize(np.repeat(pixels[:, :1], 3, axis=1), 0.5, 0.25))
    g = ColorJitter(0.5, 0.5, 0.25, seed=1)(grey).asnumpy()
    np.testing.assert_allclose(g[:, 0], g[:, 2], atol=1e-5)  # grey stays grey whatever the saturation


def _gtsrb_like(tmp_path, classes=("00000", "00001", "00002"), per_class=8):
    """A colour training folder of class folders and a test folder with a GTSRB-style CSV."""
    train = write_images(tmp_path / "signs" / "train", list(classes), per_class)
    test = tmp_path / "signs" / "test_images"
    test.mkdir()
    rows = ["Filename;ClassId"]
    for i in range(6):
        Image.fromarray(image(i % 3, 2, (24, 24))).save(test / f"{i:05d}.png")
        rows.append(f"{i:05d}.png;{i % 3}")
    (test / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return train, test / "GT-final_test.csv"


@pytest.mark.slow
def test_training_on_images_from_disk_records_classes_statistics_and_splits(tmp_path, cli_processes, monkeypatch):
    from stn_gluon.export.int8 import calibration_data
    from stn_gluon.export.onnx import export_onnx, read_metadata
    import onnx

    train, csv_file = _gtsrb_like(tmp_path)
    bad = train / "00001" / "999.png"
    bad.write_bytes(png_bytes(image(1, 0, (24, 24)))[:60])  # truncated
    names = tmp_path / "names.txt"
    names.write_text("stop\nyield\nahead\n")
    env = dict(os.environ, STN_GLUON_CACHE=str(tmp_path / "cache"))
    save = tmp_path / "run"
    args = ["train", "--dataset", f"folder:{train}", "--test-dataset", f"csv:{csv_file}", "--input-size", "28,28",
            "--epochs", "2", "--batch-size", "4", "--no-progress", "--save-dir", str(save), "--color-jitter", "0.2",
            "--class-names", str(names), "--val-split", "0.25"]
    refused = cli_processes.run(args, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "1 unreadable image(s)" in refused.stderr and "999.png" in refused.stderr
    assert "--skip-unreadable" in refused.stderr and not save.exists()
    done = cli_processes.run(args + ["--skip-unreadable"], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "Validation set: " in done.stdout and "Final Test set: " in done.stdout
    assert "Input size 28x28" in done.stdout and "Skipped 1 unreadable" in done.stdout
    meta = json.load(open(save / "model.json"))
    assert meta["classes"] == ["stop", "yield", "ahead"] and meta["digits"] is False
    assert meta["class_folders"] == ["00000", "00001", "00002"]  # the folders' own names, renamed by names.txt
    assert meta["input_shape"] == [3, 28, 28] and len(meta["mean"]) == 3 and len(meta["std"]) == 3
    metrics = json.load(open(save / "metrics.json"))
    assert metrics["skipped"] == 1 and metrics["evaluated_on"] == "test" and metrics["test_total"] == 6
    assert metrics["val_total"] == 6 and 0 <= metrics["val_accuracy"] <= 1
    # the epochs were evaluated on the validation split: their best is named so
    history = [float(r.split(",")[5]) for r in (save / "history.csv").read_text().splitlines()[1:]]
    assert metrics["best_val_accuracy"] == pytest.approx(max(history), abs=1e-6) and "best_test_accuracy" not in metrics
    assert metrics["config"]["color_jitter"] == 0.2
    assert meta["data_options"]["skip_unreadable"] is True and meta["data_options"]["test"] == f"csv:{csv_file}"
    evaluated = cli_processes.run(["evaluate", "--model", str(save), "--json"], cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test_correct"] == metrics["test_correct"]  # the same test images again
    export_onnx(str(save), str(save / "model.onnx"))
    onnx_meta = read_metadata(onnx.load(str(save / "model.onnx")))
    assert onnx_meta["classes"] == ["stop", "yield", "ahead"] and json.loads(onnx_meta["digits"]) is False
    assert onnx_meta["mean"] == meta["mean"] and onnx_meta["input_shape"] == [None, 3, 28, 28]
    monkeypatch.setenv("STN_GLUON_CACHE", str(tmp_path / "cache"))
    x, labels, _, _ = calibration_data(str(save / "model.onnx"), count=8)  # int8: calibrated on its own images
    assert x.shape == (8, 3, 28, 28) and set(labels.tolist()) <= {0, 1, 2}
    assert abs(float(x.mean())) < 1.5  # normalised with the per-channel statistics
    # the Module API trains the same data (no test split: the final report is on the validation split), here
    # streamed from disk
    module = tmp_path / "module"
    out = cli_processes.run(["train-symbol", "--dataset", f"folder:{train}", "--input-size", "28,28", "--epochs", "1",
                             "--batch-size", "4", "--no-progress", "--save-dir", str(module), "--skip-unreadable",
                             "--val-split", "0.25", "--memory-limit-mb", "0.01"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "No test split" in out.stdout and "Final Validation set: " in out.stdout
    assert "Streaming from disk" in out.stdout
    metrics = json.load(open(module / "metrics.json"))
    assert metrics["evaluated_on"] == "val" and metrics["test_total"] == 6
    assert json.load(open(module / "model.json"))["classes"] == ["00000", "00001", "00002"]
    # evaluate on another dataset from disk: its test split, when its classes are the model's
    other, wrong = tmp_path / "other", tmp_path / "wrong"
    write_images(other / "train", ["00000", "00001", "00002"], 2)
    write_images(other / "test", ["00000", "00001", "00002"], 3, start=10)
    write_images(wrong / "train", ["a", "b", "c"], 2)
    write_images(wrong / "test", ["a", "b", "c"], 2)
    again = cli_processes.run(["evaluate", "--model", str(module), "--json", "--dataset", f"folder:{other}"],
                              cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["test_total"] == 9 and str(other) in json.loads(again.stdout)["data_source"]
    for dataset, words in ((f"folder:{wrong}", "its class 0 is 'a', the model's is '00000'"),
                           (f"csv:{csv_file}", "a csv: or rec: test set is given at training (--test-dataset)"),
                           # the model's own data written another way: its own (it has no test split)
                           (f"folder:{train}/", "has no test split to evaluate on (train with --test-dataset)"),
                           (f"folder:{other / 'test'}", "has no test split to evaluate on (give a folder with")):
        refused = cli_processes.run(["evaluate", "--model", str(module), "--dataset", dataset], cwd=tmp_path, env=env)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    # the model renamed by names.txt: another folder is compared by its folders' names, the names file not needed
    names.unlink()
    assert calibration_data(str(save / "model.onnx"), count=8)[0].shape == (8, 3, 28, 28)
    own = cli_processes.run(["evaluate", "--model", str(save), "--json"], cwd=tmp_path, env=env)
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["test_correct"] == json.load(open(save / "metrics.json"))["test_correct"]
    renamed = cli_processes.run(["evaluate", "--model", str(save), "--json", "--dataset", f"folder:{other}"],
                                cwd=tmp_path, env=env)
    assert renamed.returncode == 0 and json.loads(renamed.stdout)["test_total"] == 9, renamed.stderr
    refused = cli_processes.run(["evaluate", "--model", str(save), "--dataset", f"folder:{wrong}"], cwd=tmp_path,
                                env=env)
    assert refused.returncode == 2 and "its class 0 is 'a', the model's is '00000' (stop)" in refused.stderr, \
        refused.stderr


def _error_case(case, tmp_path):
    """``(train arguments, words the error line must hold)`` of each refused dataset."""
    train, csv_file = _gtsrb_like(tmp_path)
    other = tmp_path / "other"
    if case == "empty_class_folder":
        (train / "00003").mkdir()
        return ["--dataset", f"folder:{train}"], ["00003", "empty class folder"]
    if case == "no_images":
        other.mkdir()
        return ["--dataset", f"folder:{other}"], [str(other), "no images"]
    if case == "unreadable":
        import gluoncv.data  # noqa: F401  (it tells PIL to pad truncated files: they are refused all the same)

        (train / "00000" / "zzz.jpg").write_bytes(b"not a jpeg")
        noise = np.random.RandomState(0).randint(0, 256, (24, 24, 3)).astype(np.uint8)
        (train / "00002" / "zzz.png").write_bytes(png_bytes(noise)[:1000])  # truncated: the header reads
        return ["--dataset", f"folder:{train}"], ["2 unreadable image(s)", "zzz.jpg", "zzz.png", "--skip-unreadable"]
    if case == "label_outside":
        csv_file.write_text("Filename;ClassId\n00000.png;0\n00001.png;7\n")
        return ["--dataset", f"folder:{train}", "--test-dataset", f"csv:{csv_file}"], [
            "GT-final_test.csv", "label '7'", "outside the class list"]
    if case == "class_sets_differ":
        write_images(other, ["00000", "00001", "00005"], 1)
        return ["--dataset", f"folder:{train}", "--test-dataset", f"folder:{other}"], [
            str(other), "lacks 00002", "has 00005 besides"]
    if case == "csv_columns":
        csv_file.write_text("image_file;class_number\n00000.png;0\n")
        return ["--dataset", f"folder:{train}", "--test-dataset", f"csv:{csv_file}"], [
            "GT-final_test.csv", "no image path column", "image_file, class_number", "--csv-path-column"]
    if case == "csv_named_column":
        return ["--dataset", f"csv:{csv_file}", "--csv-label-column", "Label"], ["no label column 'Label'"]
    if case == "rec_without_idx":
        rec = write_rec(tmp_path / "x.rec", [(image(0, 0, (8, 8)), 0)] * 2)
        os.remove(tmp_path / "x.idx")
        return ["--dataset", f"rec:{rec}"], ["x.rec", "no index x.idx"]
    if case == "bad_spec":
        return ["--dataset", f"images:{train}"], ["--dataset: invalid choice: 'images:", "folder:PATH"]
    if case == "input_size":
        return ["--dataset", f"folder:{train}", "--input-size", "32,x"], ["--input-size '32,x'", "H,W"]
    if case == "disk_flag_on_mnist":
        return ["--dataset", "mnist", "--input-size", "32,32"], ["--input-size", "datasets from disk"]
    if case == "too_small":
        return ["--dataset", f"folder:{train}", "--input-size", "12,12", "--batch-size", "4"], [
            "stn_lenet does not accept input (3, 12, 12)", "--input-size"]
    if case == "class_names":
        names = tmp_path / "names.txt"
        names.write_text("one\ntwo\n")
        return ["--dataset", f"folder:{train}", "--class-names", str(names)], ["names.txt", "2 class names", "3"]
    raise AssertionError(case)


ERROR_CASES = ["empty_class_folder", "no_images", "unreadable", "label_outside", "class_sets_differ", "csv_columns",
               "csv_named_column", "rec_without_idx", "bad_spec", "input_size", "disk_flag_on_mnist", "class_names", "too_small"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_data_is_one_line_naming_the_file_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    from stn_gluon.cli import main

    args, words = _error_case(case, tmp_path)
    save = tmp_path / "run"
    monkeypatch.setenv("STN_GLUON_CACHE", str(tmp_path / "cache"))
    try:
        code = main(["train", "--epochs", "1", "--no-progress", "--save-dir", str(save)] + args)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    assert not save.exists()
    assert case == "too_small" or not (tmp_path / "cache").exists()  # bad data: not even the cache is written


def test_api_errors_are_data_errors(tmp_path):
    with pytest.raises(ConfigError, match="test_dataset"):
        load_images("mnist", LoadOptions(test="csv:x.csv"))
    with pytest.raises(DataError, match="no such folder"):
        load_images(f"folder:{tmp_path / 'missing'}", opts(tmp_path))
    with pytest.raises(ConfigError, match="val_split is 0 and .* no val or test split"):
        load_images(f"folder:{write_images(tmp_path / 'd', ['a'], 2)}", opts(tmp_path, val_split=0))


def _write_mnist_folder(root, images, labels, split):
    for c in range(10):
        (root / split / str(c)).mkdir(parents=True)
    for i, (x, y) in enumerate(zip(images, labels)):
        Image.fromarray(x).save(root / split / str(int(y)) / f"{i:04d}.png", compress_level=1)


@pytest.mark.slow
def test_mnist_digits_as_a_folder_train_as_through_the_idx_loader(tmp_path, sample, monkeypatch):
    """The embedded sample's digits as PNG files (train/ and test/) and as IDX files in the same order: the same
    seed and recipe reach the same test accuracy through folder: (--digits: MNIST's normalisation) and --data-dir."""
    from stn_gluon.train.gluon import fit
    from stn_gluon.train.recipes import TrainConfig

    monkeypatch.setenv("STN_GLUON_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "digits"
    order = {s: np.argsort(getattr(sample, f"{s}_labels"), kind="stable") for s in ("train", "test")}
    _write_mnist_folder(root, sample.train_images[order["train"]], sample.train_labels[order["train"]], "train")
    _write_mnist_folder(root, sample.test_images[order["test"]], sample.test_labels[order["test"]], "test")
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "train-images-idx3-ubyte.gz", sample.train_images[order["train"]])
    write_idx(idx / "train-labels-idx1-ubyte.gz", sample.train_labels[order["train"]])
    write_idx(idx / "t10k-images-idx3-ubyte.gz", sample.test_images[order["test"]])
    write_idx(idx / "t10k-labels-idx1-ubyte.gz", sample.test_labels[order["test"]])
    folder = load_images(f"folder:{root}", LoadOptions(val_split=0, digits=True))
    np.testing.assert_array_equal(folder.train_images[:, 0], sample.train_images[order["train"]])
    np.testing.assert_array_equal(folder.test_labels, sample.test_labels[order["test"]])
    common = dict(epochs=0.25, progress=False, seed=42)
    via_idx = fit(TrainConfig.from_recipe("fast", data_dir=str(idx), save_dir=str(tmp_path / "idx_run"), **common),
                  echo=lambda line: None)
    via_folder = fit(TrainConfig.from_recipe("fast", dataset=f"folder:{root}", val_split=0, digits=True,
                                             save_dir=str(tmp_path / "folder_run"), **common), echo=lambda line: None)
    assert via_idx["test_total"] == via_folder["test_total"] == 1000
    assert abs(via_idx["test_accuracy"] - via_folder["test_accuracy"]) <= 0.003
    assert via_folder["test_accuracy"] > 0.3  # it learned something in a quarter epoch (chance: 0.1)


def test_bench_loader_runs_small_through_the_cli(tmp_path, capsys):
    from stn_gluon.cli import main

    out = tmp_path / "bench"
    main(["bench", "loader", "--images", "64", "--classes", "2", "--batch-size", "8", "--steps", "2", "--rounds", "1",
          "--workers", "0", "--out", str(out)])
    result = json.load(open(out / "results.json"))["result"]
    assert set(result["images_per_sec"]) == {"folder (cached)", "in memory", "folder (streamed)"}
    assert result["ratio"]["in memory"] == 1.0 and all(v > 0 for v in result["images_per_sec"].values())
    assert isinstance(result["target_met"], bool) and result["decode_seconds"] > 0
    assert "ratio to in memory" in (out / "results.md").read_text() and "Target:" in capsys.readouterr().out


@pytest.mark.parametrize("mean, std", [(0.1307, 0.3081), (1, 2), ([0.2, 0.5, 0.7], [0.25, 0.5, 1.0]),
                                       ("[0.2, 0.5, 0.7]", "0.5")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_unit_matches_the_per_channel_formula_in_float32(mean, std, dtype):
    x = np.random.RandomState(0).rand(2, 3, 4, 5).astype(dtype)
    m = np.broadcast_to(np.asarray(json.loads(mean) if isinstance(mean, str) else mean, np.float64).reshape(-1), 3)
    s = np.broadcast_to(np.asarray(json.loads(std) if isinstance(std, str) else std, np.float64).reshape(-1), 3)
    out = normalize_unit(x, mean, std)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, (x - m.reshape(1, 3, 1, 1)) / s.reshape(1, 3, 1, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [0.1, 0.2], "x", None])
def test_channel_values_refuse_what_is_not_one_finite_number_or_one_per_channel(value):
    with pytest.raises(ValueError):
        as_channel_values(value, 3)


def test_class_check_of_another_folder():
    """evaluate's class check: exact where the data's own names are known, by number otherwise (a model renamed
    by a names file before model.json recorded class_folders), the model's name shown beside its folder's."""
    from stn_gluon._runtime.errors import StnGluonError
    from stn_gluon.cli.commands import _check_classes

    _check_classes("x", ["a", "b"], ["a", "b"], ["stop", "go"])
    _check_classes("x", ["c", "d"], None, ["stop", "go"])
    with pytest.raises(StnGluonError, match="x: it has 3 classes, the model 2"):
        _check_classes("x", ["c", "d", "e"], None, ["stop", "go"])
    with pytest.raises(StnGluonError, match=r"its class 1 is 'd', the model's is 'b' \(go\)"):
        _check_classes("x", ["a", "d"], ["a", "b"], ["stop", "go"])
