"""Independent NumPy references the tests compare MXNet against."""
import numpy as np


def _target_points(out_hw):
    """Output pixel centres in [-1, 1] (align_corners=True): x (Ho*Wo,), y (Ho*Wo,)."""
    ho, wo = out_hw
    yt, xt = np.meshgrid(np.linspace(-1, 1, ho), np.linspace(-1, 1, wo), indexing="ij")
    return xt.ravel(), yt.ravel()


def sample_at(image, xs, ys, out_hw):
    """Bilinear sampling of one image (C, H, W) at normalised source points, zero padding -> (C, Ho, Wo)."""
    c, h, w = image.shape
    px, py = (xs + 1) * (w - 1) / 2, (ys + 1) * (h - 1) / 2
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    out = np.zeros((c, len(xs)))
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(px - xi)) * (1 - np.abs(py - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = np.zeros((c, len(xs)))
            vals[:, inside] = image[:, yi[inside], xi[inside]]
            out += vals * weight
    return out.reshape(c, *out_hw)


def affine_sample(images, theta, out_hw):
    """Bilinear warp with zero padding, align_corners=True, written from the definition.

    images: (N, C, H, W); theta: (N, 2, 3) target->source in [-1, 1]; out_hw: (Ho, Wo).
    """
    xt, yt = _target_points(out_hw)
    target = np.stack([xt, yt, np.ones_like(xt)])  # (3, Ho*Wo)
    out = []
    for b in range(len(images)):
        xs, ys = np.asarray(theta[b], np.float64).reshape(2, 3) @ target
        out.append(sample_at(images[b], xs, ys, out_hw))
    return np.array(out)


def homography_sample(images, homographies, out_hw):
    """Warp by 3x3 homographies (N, 3, 3), target->source: x_s = (H p)_0 / (H p)_2."""
    xt, yt = _target_points(out_hw)
    target = np.stack([xt, yt, np.ones_like(xt)])
    out = []
    for b in range(len(images)):
        u, v, w = np.asarray(homographies[b], np.float64) @ target
        out.append(sample_at(images[b], u / w, v / w, out_hw))
    return np.array(out)


def homography_from_corners(src, dst):
    """The 3x3 homography taking 4 points ``src`` (4, 2) to ``dst`` (4, 2), by the 8x8 linear system."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows, float), np.array(rhs, float)), 1.0).reshape(3, 3)


def tps_sample(images, source_points, k, out_hw):
    """Thin-plate-spline warp, solved per image from the textbook equations.

    source_points: (N, k*k, 2) source (x, y) of the k x k control points whose
    target positions are a linspace(-1, 1) grid, x fastest. The spline
    f(p) = a0 + a1 x + a2 y + sum_i w_i U(|p - c_i|), U(r) = r^2 log r^2,
    interpolates f(c_i) = s_i with sum w_i = sum w_i c_i = 0.
    """
    ticks = np.linspace(-1, 1, k)
    ctrl = np.array([(x, y) for y in ticks for x in ticks])
    n = len(ctrl)

    def radial(p, q):
        r2 = ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)
        out = np.zeros_like(r2)
        pos = r2 > 0
        out[pos] = r2[pos] * np.log(r2[pos])
        return out

    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n] = radial(ctrl, ctrl)
    lhs[:n, n:] = np.hstack([np.ones((n, 1)), ctrl])
    lhs[n:, :n] = lhs[:n, n:].T
    xt, yt = _target_points(out_hw)
    pts = np.stack([xt, yt], axis=1)
    out = []
    for b in range(len(images)):
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = source_points[b]
        coef = np.linalg.solve(lhs, rhs)
        mapped = radial(pts, ctrl) @ coef[:n] + coef[n] + pts @ coef[n + 1:]
        out.append(sample_at(images[b], mapped[:, 0], mapped[:, 1], out_hw))
    return np.array(out)


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
