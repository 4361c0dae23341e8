"""Non-adaptive scan patterns over a region with a given number of points (the baselines of
`bench adaptive`): a uniform grid, uniform random points and a Fermat spiral. Pure numpy."""

from __future__ import annotations

import numpy as np


def _check(region_m: tuple[float, float, float, float], n_points: int) -> None:
    y0, y1, x0, x1 = region_m
    if not (y1 > y0 and x1 > x0):
        raise ValueError(f"region_m must be (y_min, y_max, x_min, x_max), got {region_m!r}")
    if n_points < 1:
        raise ValueError(f"n_points must be at least 1, got {n_points}")


def uniform_grid(region_m: tuple[float, float, float, float], n_points: int) -> np.ndarray:
    """About ``n_points`` on a square-celled grid filling the region, snake order, (N, 2) (y, x)
    m; exactly ``n_points`` (the grid is trimmed, evenly, when it has more)."""
    _check(region_m, n_points)
    y0, y1, x0, x1 = region_m
    h, w = y1 - y0, x1 - x0
    step = np.sqrt(h * w / n_points)
    rows = max(1, int(round(h / step)))
    cols = max(1, int(np.ceil(n_points / rows)))
    ys = y0 + (np.arange(rows) + 0.5) * h / rows
    xs = x0 + (np.arange(cols) + 0.5) * w / cols
    points = []
    for i, y in enumerate(ys):
        row = xs if i % 2 == 0 else xs[::-1]
        points.extend((y, x) for x in row)
    points = np.asarray(points)
    if len(points) > n_points:
        keep = np.round(np.linspace(0, len(points) - 1, n_points)).astype(int)
        points = points[keep]
    return points


def random_points(
    region_m: tuple[float, float, float, float], n_points: int, seed: int = 0
) -> np.ndarray:
    """``n_points`` uniform random positions in the region, (N, 2) (y, x) m."""
    _check(region_m, n_points)
    y0, y1, x0, x1 = region_m
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(y0, y1, n_points), rng.uniform(x0, x1, n_points)])


def fermat_spiral_points(region_m: tuple[float, float, float, float], n_points: int) -> np.ndarray:
    """``n_points`` on a Fermat spiral (golden angle) covering the region's circumscribed disc,
    keeping the points inside the region until ``n_points`` are found, (N, 2) (y, x) m."""
    _check(region_m, n_points)
    y0, y1, x0, x1 = region_m
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    radius = np.hypot(y1 - y0, x1 - x0) / 2
    # the disc is larger than the rectangle: take enough spiral points that n fall inside
    share = (y1 - y0) * (x1 - x0) / (np.pi * radius**2)
    total = int(np.ceil(n_points / share)) + 4
    while True:
        k = np.arange(total) + 0.5
        r = radius * np.sqrt(k / total)
        theta = k * np.pi * (3 - np.sqrt(5))
        pts = np.column_stack([cy + r * np.sin(theta), cx + r * np.cos(theta)])
        inside = (pts[:, 0] >= y0) & (pts[:, 0] <= y1) & (pts[:, 1] >= x0) & (pts[:, 1] <= x1)
        if inside.sum() >= n_points:
            return pts[inside][:n_points]
        total = int(total * 1.1) + 1
