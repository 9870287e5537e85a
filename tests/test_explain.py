"""The STN's sampling region in input pixels, for every transform family."""
import numpy as np
import pytest

from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.nn.explain import grid_to_pixels, sampling_grid, sampling_regions
from stn_gluon.nn.ops import get_transform

IDENTITY = np.array([[1, 0, 0, 0, 1, 0]], np.float32)


def corners(region):
    pts = np.asarray(region["outline"])
    return pts.min(axis=0), pts.max(axis=0)


def test_identity_outlines_the_pixel_centres_of_the_whole_input():
    (region,) = sampling_regions(IDENTITY, "affine", (28, 28), (28, 28))
    lo, hi = corners(region)
    np.testing.assert_allclose(lo, [0.5, 0.5])
    np.testing.assert_allclose(hi, [27.5, 27.5])
    outline = np.asarray(region["outline"])
    assert len(outline) == 4 * 27 + 1 and np.allclose(outline[0], outline[-1])  # closed, clockwise
    assert len(region["lines"]) == 6 and all(len(line) == 28 for line in region["lines"])


def test_a_zoom_and_shift_outline_the_window_it_samples():
    # half the size, centred on the input's right half: x in [0, 1] of [-1, 1], y in [-0.5, 0.5]
    theta = np.array([[0.5, 0, 0.5, 0, 0.5, 0]], np.float32)
    (region,) = sampling_regions(theta, "attention", (28, 28), (128, 128))
    lo, hi = corners(region)
    np.testing.assert_allclose(lo, [(0 + 1) / 2 * 127 + 0.5, (-0.5 + 1) / 2 * 127 + 0.5], atol=0.01)
    np.testing.assert_allclose(hi, [(1 + 1) / 2 * 127 + 0.5, (0.5 + 1) / 2 * 127 + 0.5], atol=0.01)


@pytest.mark.parametrize("name", ["projective", "tps", "tps3"])
def test_every_family_gives_its_own_grid(name):
    family = get_transform(name)
    identity = np.array([family.identity()], np.float32)
    np.testing.assert_allclose(sampling_grid(identity, name, (20, 24)), sampling_grid(IDENTITY, "affine", (20, 24)),
                               atol=1e-5)
    moved = identity.copy()
    moved[0, 0] += 0.3  # projective: a; tps: the first control point's x
    grid = sampling_grid(moved, name, (20, 24))
    assert not np.allclose(grid, sampling_grid(IDENTITY, "affine", (20, 24)), atol=1e-3)
    (region,) = sampling_regions(moved, name, (20, 24), (28, 28))
    assert np.allclose(region["outline"][0], grid_to_pixels(grid, (28, 28))[0, :, 0, 0], atol=0.01)


def test_theta_of_the_wrong_size_is_refused():
    with pytest.raises(StnGluonError, match=r"attention transform must be \(N, 6\)"):
        sampling_grid(np.zeros((1, 3), np.float32), "attention", (28, 28))
    with pytest.raises(StnGluonError, match=r"projective transform must be \(N, 8\)"):
        sampling_grid(IDENTITY, "projective", (28, 28))


def test_default_visualize_out_names_a_file_in_the_current_folder_for_any_dataset():
    from stn_gluon.train.plots import default_visualize_out

    assert default_visualize_out("runs/demo/model", "mnist") == "stn_grid-demo-mnist.png"
    assert default_visualize_out("runs/signs/model", "folder:/data/signs0/") == "stn_grid-signs-folder-signs0.png"
    assert default_visualize_out("runs/r/model", "folder:my.signs") == "stn_grid-r-folder-my.signs.png"
    assert default_visualize_out("runs/s/model", "rec:data/photos train.rec") == "stn_grid-s-rec-photos-train.png"
    assert default_visualize_out("runs/x/model", "csv:C:/x/GT final.csv") == "stn_grid-x-csv-GT-final.png"
