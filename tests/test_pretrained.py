"""The pretrained models shipped in the package: accuracy, provenance, checksums, the CLI's defaults."""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

import stn_gluon
from stn_gluon import pretrained
from stn_gluon.cli import main
from stn_gluon._runtime.errors import CheckpointError, StnGluonError
from stn_gluon.serve.predictors import load_predictor, preprocess

NOISY = "stn_lenet_noisy128"


@pytest.fixture(scope="module")
def mnist_predictor():
    return load_predictor("pretrained:stn_lenet")


def test_both_models_are_shipped_small_with_their_provenance():
    assert pretrained.list_pretrained() == ["stn_lenet", NOISY]
    total = 0
    for name in pretrained.list_pretrained():
        model = pretrained.get_pretrained(name)
        total += sum(os.path.getsize(os.path.join(model.folder, f)) for f in os.listdir(model.folder))
        assert model.provenance["command"].startswith("stn-gluon train ")
        assert len(model.provenance["commit"]) == 40
        assert model.metrics["config"]["epochs"] == model.metrics["epochs"]  # a finished run
    assert total < 1_000_000
    mnist = pretrained.get_pretrained("stn_lenet")
    # the run's own measurement on the full MNIST test set (10,000 digits)
    assert mnist.metrics["test_total"] == 10000 and mnist.test_accuracy >= 0.995
    assert mnist.metrics["config"]["dataset"] == "mnist" and mnist.metrics["config"]["epochs"] == 20


def test_shipped_mnist_model_classifies_the_embedded_real_digits(mnist_predictor, sample):
    # The sample's digits come from MNIST's training set: this checks the weights and the reading of
    # inputs end to end (the generalisation figure is the run's own, on the full test set, above).
    pixels = sample.test_images[:, None].astype(np.float32) / 255
    out = mnist_predictor.predict(preprocess(pixels, mnist_predictor.mean, mnist_predictor.std))
    accuracy = float((out["probabilities"].argmax(1) == sample.test_labels).mean())
    assert accuracy >= 0.98, accuracy


def test_get_model_pretrained_is_the_gluon_network_of_the_shipped_weights(mnist_predictor, sample):
    net = stn_gluon.get_model("stn_lenet", pretrained=True, return_theta=True)
    assert isinstance(net, stn_gluon.STNNet)
    x = preprocess(sample.test_images[:16, None].astype(np.float32) / 255, mnist_predictor.mean,
                   mnist_predictor.std)
    logits, theta = net(mx.nd.array(x))
    want = mnist_predictor.predict(x)
    np.testing.assert_allclose(logits.asnumpy(), want["logits"], atol=1e-4)
    np.testing.assert_allclose(theta.asnumpy(), want["theta"], atol=1e-5)
    assert "stn_lenet_noisy128" in stn_gluon.list_models()
    untrained = stn_gluon.get_model(NOISY)  # the architecture alone, as it was trained
    assert untrained.config["input_shape"] == [1, 128, 128] and untrained.config["transform"] == "attention"
    with pytest.raises(StnGluonError, match="would change the network"):
        stn_gluon.get_model("stn_lenet", pretrained=True, dropout=0.1)
    with pytest.raises(StnGluonError, match="no pretrained model 'nope'"):
        stn_gluon.get_model("nope", pretrained=True)


def test_noisy128_model_finds_and_reads_digits_on_the_noisy_canvas(sample):
    from stn_gluon.data.mnist import DigitDataset
    from stn_gluon.data.distortions import generate

    few = DigitDataset(sample.train_images[:8], sample.train_labels[:8], sample.test_images[:200],
                       sample.test_labels[:200], source="test")
    noisy = generate("noisy128", few, seed=5)
    predictor = load_predictor(f"pretrained:{NOISY}")
    assert predictor.input_shape == (1, 128, 128) and predictor.transform == "attention"
    x = preprocess(noisy.test_images[:, None].astype(np.float32) / 255, predictor.mean, predictor.std)
    out = predictor.predict(x)
    accuracy = float((out["probabilities"].argmax(1) == noisy.test_labels).mean())
    assert accuracy >= 0.9, accuracy
    scale = out["theta"][:, 0]
    assert (scale < 0.5).mean() > 0.9  # it zooms in: each window is a fraction of the canvas


def tampered_copy(tmp_path, file):
    root = tmp_path / "pretrained"
    shutil.copytree(pretrained.ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = root / "stn_lenet" / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return root


@pytest.mark.parametrize("file", ["model-0000.params", "model.json"])
def test_a_tampered_copy_is_refused_with_one_line(tmp_path, monkeypatch, capsys, file):
    root = tampered_copy(tmp_path, file)
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        pretrained.get_pretrained("stn_lenet", str(root))
    monkeypatch.setattr(pretrained, "ROOT", str(root))
    digit = tmp_path / "digit.npy"
    np.save(digit, np.zeros((28, 28), np.float32))
    assert main(["predict", str(digit)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: pretrained model stn_lenet: ") and "SHA-256" in err[-1]
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        stn_gluon.get_model("stn_lenet", pretrained=True)


def test_predict_without_model_uses_the_mnist_model_and_says_so(tmp_path, capsys, sample):
    from PIL import Image

    path = tmp_path / "seven.png"
    k = int(np.flatnonzero(sample.test_labels == 7)[0])
    Image.fromarray(255 - sample.test_images[k]).save(path)  # dark on light, as people draw
    assert main(["predict", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: 7 (p=")
    notes = [line for line in err.splitlines() if "pretrained:stn_lenet" in line]
    assert len(notes) == 1 and notes[0].startswith("no --model given: using pretrained:stn_lenet")
    assert main(["predict", "--model", f"pretrained:{NOISY}", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"] in range(10)
    assert main(["predict", "--model", "pretrained:nope", str(path)]) == 2
    assert "error: no pretrained model 'nope'; choose one of stn_lenet, stn_lenet_noisy128" in capsys.readouterr().err
    assert main(["predict", "--backend", "onnxruntime", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: pretrained:stn_lenet ships as MXNet files: use --backend mxnet, or make stn_lenet.onnx with "
        "stn-gluon export-onnx --model pretrained:stn_lenet and give that")


def test_export_onnx_of_a_shipped_model_writes_here_not_into_the_package(tmp_path, monkeypatch, capsys, sample):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(pretrained.get_pretrained("stn_lenet").folder))
    assert main(["export-onnx", "--model", "pretrained:stn_lenet"]) == 0
    assert "Wrote stn_lenet.onnx" in capsys.readouterr().out and (tmp_path / "stn_lenet.onnx").is_file()
    assert sorted(os.listdir(pretrained.get_pretrained("stn_lenet").folder)) == before
    onnx = load_predictor(str(tmp_path / "stn_lenet.onnx"))
    x = preprocess(sample.test_images[:8, None].astype(np.float32) / 255, onnx.mean, onnx.std)
    np.testing.assert_allclose(onnx.predict(x)["logits"], load_predictor("pretrained:stn_lenet").predict(x)["logits"],
                               atol=1e-4)


def test_models_command_lists_the_shipped_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "stn_lenet: " in out and f"{NOISY}: " in out and "test accuracy 99." in out
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in doc["pretrained"]] == ["pretrained:stn_lenet", f"pretrained:{NOISY}"]
