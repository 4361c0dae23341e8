"""Test samples as complex transmissions on a metric grid.

Each sample kind draws a thickness map (values in [0, 1], times ``thickness_m``) of one
material, so phase and absorption come from the same complex refractive index:

* ``etched``: random polygons and lines etched into a layer of one thickness (the kind of
  sample PtychoNN's published models were trained on);
* ``siemens-star``: a Siemens star resolution target;
* ``letters``: random text rendered with a bundled font;
* ``image``: any grey-scale image (a file, an array, or scikit-image's bundled camera image)
  used as the thickness map.

Edges are anti-aliased by drawing at a finer grid and averaging, so a sample does not carry
more high-frequency power than its pixel size can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..dataset import ComplexImage
from ..geometry import PixelGrid
from .materials import Material, material

SUPERSAMPLE = 4


def _check_shape(shape_px: tuple[int, int]) -> tuple[int, int]:
    rows, cols = (int(shape_px[0]), int(shape_px[1]))
    if rows < 8 or cols < 8:
        raise ValueError(f"sample shape must be at least 8x8 pixels, got {shape_px}")
    return rows, cols


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    return image[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor).mean((1, 3))


def etched_thickness(
    shape_px: tuple[int, int],
    pixel_size_m: float,
    rng: np.random.Generator,
    *,
    feature_size_m: tuple[float, float] = (40e-9, 400e-9),
    fill_fraction: float = 0.4,
    line_fraction: float = 0.4,
) -> np.ndarray:
    """Random polygons and lines of one depth; returns a (rows, cols) map in [0, 1].

    Args:
        shape_px: (rows, columns) of the map.
        pixel_size_m: pixel side in metres; features are sized in metres.
        rng: random generator (the sample is reproducible from its seed).
        feature_size_m: (smallest, largest) polygon radius / line width scale in metres.
        fill_fraction: target fraction of the area covered by features (0..1).
        line_fraction: fraction of features that are lines rather than polygons.
    """
    rows, cols = _check_shape(shape_px)
    if not 0 < fill_fraction < 1:
        raise ValueError(f"fill_fraction must lie in (0, 1), got {fill_fraction}")
    lo_px, hi_px = (s / pixel_size_m * SUPERSAMPLE for s in feature_size_m)
    if not 0 < lo_px <= hi_px:
        raise ValueError(
            f"feature_size_m must be an increasing positive pair, got {feature_size_m}"
        )
    canvas = Image.new("L", (cols * SUPERSAMPLE, rows * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    target = fill_fraction * canvas.size[0] * canvas.size[1] * 255
    max_features = 100_000
    for _ in range(max_features):
        if np.asarray(canvas, dtype=np.float64).sum() >= target:
            break
        for _ in range(16):  # draw a few before measuring the covered area again
            centre = rng.uniform(0, 1, 2) * canvas.size
            radius = np.exp(rng.uniform(np.log(lo_px), np.log(hi_px)))
            if rng.uniform() < line_fraction:
                angle = rng.uniform(0, np.pi)
                length = radius * rng.uniform(3, 12)
                d = 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
                width = max(1, int(round(radius * rng.uniform(0.15, 0.5))))
                draw.line([tuple(centre - d), tuple(centre + d)], fill=255, width=width)
            else:
                n_vertices = int(rng.integers(3, 9))
                angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
                radii = radius * rng.uniform(0.5, 1.0, n_vertices)
                vertices = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
                draw.polygon([tuple(v) for v in vertices], fill=255)
    return _downsample(np.asarray(canvas, dtype=np.float64) / 255.0, SUPERSAMPLE)


def siemens_star_thickness(
    shape_px: tuple[int, int],
    pixel_size_m: float,
    rng: np.random.Generator | None = None,
    *,
    n_spokes: int = 36,
    radius_m: float | None = None,
    centre_m: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A Siemens star (``n_spokes`` dark spokes) centred at ``centre_m`` (y, x) on a centred grid.

    Args:
        radius_m: outer radius in metres; default 45 % of the smaller side.
    """
    rows, cols = _check_shape(shape_px)
    if n_spokes < 2:
        raise ValueError(f"a Siemens star needs at least 2 spokes, got {n_spokes}")
    radius_m = 0.45 * min(rows, cols) * pixel_size_m if radius_m is None else radius_m
    grid = PixelGrid.centred((rows * SUPERSAMPLE, cols * SUPERSAMPLE), pixel_size_m / SUPERSAMPLE)
    offset = (SUPERSAMPLE - 1) / 2 * grid.pixel_size_m  # fine pixel centres inside coarse ones
    y = grid.origin_m[0] + np.arange(grid.shape[0]) * grid.pixel_size_m - offset - centre_m[0]
    x = grid.origin_m[1] + np.arange(grid.shape[1]) * grid.pixel_size_m - offset - centre_m[1]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    theta = np.arctan2(yy, xx)
    star = (np.sin(n_spokes * theta) > 0) & (np.hypot(yy, xx) <= radius_m)
    return _downsample(star.astype(np.float64), SUPERSAMPLE)


def letters_thickness(
    shape_px: tuple[int, int],
    pixel_size_m: float,
    rng: np.random.Generator,
    *,
    text: str | None = None,
    letter_height_m: tuple[float, float] = (150e-9, 600e-9),
    fill_fraction: float = 0.3,
) -> np.ndarray:
    """Letters rendered with matplotlib's bundled DejaVu Sans font.

    With ``text`` given, the text is written in lines across the field at the largest letter
    height; otherwise random capital letters of random heights and positions are scattered
    until ``fill_fraction`` of the area is covered.
    """
    from matplotlib import font_manager

    rows, cols = _check_shape(shape_px)
    font_path = font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    canvas = Image.new("L", (cols * SUPERSAMPLE, rows * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    lo_px, hi_px = (h / pixel_size_m * SUPERSAMPLE for h in letter_height_m)
    if text is not None:
        font = ImageFont.truetype(font_path, max(4, int(hi_px)))
        line_height = int(hi_px * 1.2)
        for row, y in enumerate(range(0, canvas.size[1], line_height)):
            draw.text((-(row * hi_px) % (hi_px * 3), y), (text + "  ") * 200, fill=255, font=font)
        return _downsample(np.asarray(canvas, dtype=np.float64) / 255.0, SUPERSAMPLE)
    target = fill_fraction * canvas.size[0] * canvas.size[1] * 255
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while np.asarray(canvas, dtype=np.float64).sum() < target:
        for _ in range(16):
            size = max(4, int(np.exp(rng.uniform(np.log(lo_px), np.log(hi_px)))))
            font = ImageFont.truetype(font_path, size)
            xy = tuple(rng.uniform(-0.1, 1.0, 2) * canvas.size)
            draw.text(xy, str(rng.choice(list(alphabet))), fill=255, font=font)
    return _downsample(np.asarray(canvas, dtype=np.float64) / 255.0, SUPERSAMPLE)


def circuit_thickness(
    shape_px: tuple[int, int],
    pixel_size_m: float,
    rng: np.random.Generator,
    *,
    n_blocks: int = 4,
    block_fraction: float = 0.3,
    line_width_m: tuple[float, float] = (40e-9, 120e-9),
    lines_per_um2: float = 6.0,
) -> np.ndarray:
    """A circuit-like layout: blocks of Manhattan wiring (horizontal and vertical traces,
    square pads) on an otherwise empty field.

    ``n_blocks`` rectangles together cover about ``block_fraction`` of the field; each holds
    about ``lines_per_um2`` traces per square micrometre of widths in ``line_width_m``.
    """
    rows, cols = _check_shape(shape_px)
    out = np.zeros((rows, cols))
    area_px = rows * cols * block_fraction / max(n_blocks, 1)
    for _ in range(n_blocks):
        aspect = rng.uniform(0.5, 2.0)
        h = int(min(rows, np.sqrt(area_px * aspect)))
        w = int(min(cols, area_px / max(h, 1)))
        r0, c0 = int(rng.integers(0, max(rows - h, 1))), int(rng.integers(0, max(cols - w, 1)))
        n_lines = max(2, int(lines_per_um2 * h * w * (pixel_size_m * 1e6) ** 2))
        for _ in range(n_lines):
            width = max(1, int(rng.uniform(*line_width_m) / pixel_size_m))
            if rng.random() < 0.5:
                r = r0 + int(rng.integers(0, max(h - width, 1)))
                a, b = sorted(c0 + rng.integers(0, max(w, 1), 2))
                out[r : r + width, a : b + 1] = 1.0
                end = (r, b)
            else:
                c = c0 + int(rng.integers(0, max(w - width, 1)))
                a, b = sorted(r0 + rng.integers(0, max(h, 1), 2))
                out[a : b + 1, c : c + width] = 1.0
                end = (b, c)
            pad = 2 * width
            r0p, c0p = max(end[0] - pad // 2, 0), max(end[1] - pad // 2, 0)
            out[r0p : end[0] + pad, c0p : end[1] + pad] = 1.0
    return out


def image_thickness(
    shape_px: tuple[int, int],
    pixel_size_m: float,
    rng: np.random.Generator | None = None,
    *,
    image: str | Path | np.ndarray | None = None,
    invert: bool = False,
) -> np.ndarray:
    """A grey-scale image, resized to ``shape_px`` and scaled to [0, 1], as a thickness map.

    Args:
        image: a path (.npy or any format Pillow reads), a 2-D array, or None for
            scikit-image's bundled ``camera`` picture.
        invert: use 1 - image (bright = thin).
    """
    from skimage import data as skdata
    from skimage.transform import resize

    rows, cols = _check_shape(shape_px)
    if image is None:
        picture = skdata.camera().astype(np.float64)
    elif isinstance(image, np.ndarray):
        picture = np.asarray(image, dtype=np.float64)
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"sample image {path} does not exist")
        if path.suffix == ".npy":
            picture = np.load(path, allow_pickle=False).astype(np.float64)
        else:
            picture = np.asarray(Image.open(path).convert("F"), dtype=np.float64)
    if picture.ndim == 3:
        picture = picture.mean(axis=-1)
    if picture.ndim != 2:
        raise ValueError(f"a sample image must be 2-D (grey) or 3-D (colour), got {picture.shape}")
    if not np.all(np.isfinite(picture)):
        raise ValueError("the sample image contains NaN or infinite values")
    picture = resize(picture, (rows, cols), anti_aliasing=True)
    span = np.ptp(picture)
    scaled = (picture - picture.min()) / span if span > 0 else np.zeros_like(picture)
    return 1.0 - scaled if invert else scaled


ThicknessFunction = Callable[..., np.ndarray]

SAMPLE_KINDS: dict[str, ThicknessFunction] = {
    "etched": etched_thickness,
    "siemens-star": siemens_star_thickness,
    "letters": letters_thickness,
    "circuit": circuit_thickness,
    "image": image_thickness,
}


def make_sample(
    kind: str,
    shape_px: tuple[int, int],
    pixel_size_m: float,
    energy_ev: float,
    *,
    material_name: str | Material = "gold",
    thickness_m: float = 500e-9,
    seed: int | None = 0,
    **options: Any,
) -> ComplexImage:
    """A sample's complex transmission on a grid centred at (0, 0) m.

    Args:
        kind: one of ``SAMPLE_KINDS`` ("etched", "siemens-star", "letters", "circuit", "image").
        shape_px: (rows, columns).
        pixel_size_m: object pixel size in metres.
        energy_ev: photon energy in eV (sets phase shift and absorption).
        material_name: a name in ``materials.MATERIALS`` or a `Material`.
        thickness_m: depth of the features in metres.
        seed: seed of the random features (reproducible samples).
        **options: passed to the kind's thickness function (e.g. ``n_spokes``, ``text``,
            ``image``, ``fill_fraction``).
    """
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown sample kind {kind!r}; known: {sorted(SAMPLE_KINDS)}")
    if not pixel_size_m > 0:
        raise ValueError(f"pixel_size_m must be positive, got {pixel_size_m!r}")
    if not thickness_m >= 0:
        raise ValueError(f"thickness_m must be non-negative, got {thickness_m!r}")
    rng = np.random.default_rng(seed)
    thickness_map = SAMPLE_KINDS[kind](shape_px, pixel_size_m, rng, **options)
    transmission = material(material_name).transmission(thickness_map * thickness_m, energy_ev)
    grid = PixelGrid.centred(thickness_map.shape, pixel_size_m)
    return ComplexImage(transmission, pixel_size_m, grid.origin_m)
