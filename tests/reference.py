"""Independent NumPy references the tests compare MXNet against."""
import numpy as np


def affine_sample(images, theta, out_hw):
    """Bilinear warp with zero padding, align_corners=True, written from the definition.

    images: (N, C, H, W); theta: (N, 2, 3) target->source in [-1, 1]; out_hw: (Ho, Wo).
    """
    n, c, h, w = images.shape
    ho, wo = out_hw
    yt, xt = np.meshgrid(np.linspace(-1, 1, ho), np.linspace(-1, 1, wo), indexing="ij")
    target = np.stack([xt.ravel(), yt.ravel(), np.ones(ho * wo)])  # (3, Ho*Wo)
    out = np.zeros((n, c, ho * wo))
    for b in range(n):
        xs, ys = np.asarray(theta[b], np.float64).reshape(2, 3) @ target
        px, py = (xs + 1) * (w - 1) / 2, (ys + 1) * (h - 1) / 2
        x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
        for dx in (0, 1):
            for dy in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                weight = (1 - np.abs(px - xi)) * (1 - np.abs(py - yi))
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                vals = np.zeros((c, ho * wo))
                vals[:, inside] = images[b][:, yi[inside], xi[inside]]
                out[b] += vals * weight
    return out.reshape(n, c, ho, wo)


def random_thetas(rng, n):
    """Rotations, anisotropic scales (zoom in and out), shears, and translations past the border."""
    angle = rng.uniform(-np.pi, np.pi, n)
    scale = rng.uniform(0.4, 1.8, (n, 2))
    shear = rng.uniform(-0.5, 0.5, n)
    shift = rng.uniform(-1.5, 1.5, (n, 2))
    thetas = []
    for a, (sx, sy), k, (tx, ty) in zip(angle, scale, shear, shift):
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        lin = rot @ np.array([[sx, k], [0, sy]])
        thetas.append(np.hstack([lin, [[tx], [ty]]]))
    return np.array(thetas, dtype=np.float32)
