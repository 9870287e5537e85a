#!/usr/bin/env python
"""What a trained STN does to the synthetic signs: its transform against each test sign's drawn pose.

The generator knows where it put every sign (``stn_gluon.data.signs.sign_pose``), so the STN's affine
parameters on the test split can be compared with it, image by image:

* rotation: the rotation part of theta (degrees) against the sign's drawn rotation; straightening means a
  slope near 1 (theta turns the sampling grid with the sign), no straightening a slope near 0;
* zoom: the side of the sampled region (sqrt of theta's determinant, in frame widths) against the sign's side;
* shift: the centre of the sampled region against the sign's centre (both in [-1, 1] frame coordinates).

    python scripts/sign_poses.py runs/signs_stn_idsia --signs data/signs

Reports the correlation and least-squares slope of each pair, the test accuracy, and the medians.
"""
import argparse
import json
import os

import numpy as np

from stn_gluon.data.mnist import normalize
from stn_gluon.data.signs import SIGNS, parse_scale, parse_size, sign_pose
from stn_gluon.data.sources import load_for_model
from stn_gluon.export.saved import load_model
from stn_gluon.nn.explain import explain_batch
from stn_gluon.train.reporting import run_script


def drawn_poses(signs_dir, labels):
    """(rotation degrees, side / frame width, centre x, centre y in [-1, 1]) of each test image, in the
    loader's order (class folders, then files, both sorted: checked against the labels)."""
    with open(os.path.join(signs_dir, "dataset.json")) as f:
        made = json.load(f)
    per_class, seed = made["test_per_class"], made["seed"]
    if list(labels) != [k // per_class for k in range(len(labels))]:
        raise SystemExit(f"{signs_dir}: the test split is not {per_class} images per class in order")
    size, scale = parse_size(made["size"]), parse_scale(made["sign_scale"])
    index = {sign.name: i for i, sign in enumerate(SIGNS)}
    signs = [index[name] for name in made["classes"]]
    rows = []
    for k, label in enumerate(labels):
        p = sign_pose(signs[label], seed, "test", k % per_class, size, scale, made.get("max_rotation", 15.0))
        rows.append((p.rotation, p.side / p.width, 2 * p.cx / p.width - 1, 2 * p.cy / p.height - 1))
    return np.array(rows)


def stn_poses(model, images):
    """(rotation degrees, region side in frame widths, centre x, centre y) of the STN's theta, and the
    predicted labels, for normalised images ``(N, C, H, W)``."""
    thetas, predicted = [], []
    for start in range(0, len(images), 256):
        explained = explain_batch(model, images[start:start + 256])
        thetas.append(explained.theta.reshape(len(explained.theta), -1))
        predicted.append(explained.probabilities.argmax(axis=1))
    t = np.concatenate(thetas)
    a, b, tx, c, d, ty = (t[:, i] for i in range(6))
    rotation = np.degrees(np.arctan2(c - b, a + d))
    return np.stack([rotation, np.sqrt(np.abs(a * d - b * c)), tx, ty], axis=1), np.concatenate(predicted)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained STN model's run folder (trained on the sign set)")
    parser.add_argument("--signs", required=True, help="the folder `stn-gluon make-dataset signs` wrote")
    args = parser.parse_args(argv)
    model = load_model(args.run)
    meta = model.meta
    data = load_for_model(f"folder:{args.signs}", meta["input_shape"], options=meta.get("data_options"))
    got, predicted = stn_poses(model, normalize(data.test_images, meta["mean"], meta["std"]))
    want = drawn_poses(args.signs, np.asarray(data.test_labels))
    print(f"{args.run}: test accuracy {np.mean(predicted == data.test_labels):.4f} on {len(predicted)} images")
    for i, what in enumerate(["rotation (degrees)", "side (frame widths)", "centre x", "centre y"]):
        r = np.corrcoef(want[:, i], got[:, i])[0, 1]
        slope = np.polyfit(want[:, i], got[:, i], 1)[0]
        print(f"  {what:20s} drawn median {np.median(want[:, i]):+.3f}, STN median {np.median(got[:, i]):+.3f}, "
              f"STN p10..p90 {np.percentile(got[:, i], 10):+.3f}..{np.percentile(got[:, i], 90):+.3f}; "
              f"correlation {r:+.3f}, slope {slope:+.3f}")
    return 0


if __name__ == "__main__":
    run_script(main)
