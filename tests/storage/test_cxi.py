"""CXI read/write: round trips, the shared reference file, and error reporting."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bluesky_ptychonn.dataset import ComplexImage, PtychoDataset, Reconstruction
from bluesky_ptychonn.geometry import ELECTRONVOLT_J
from bluesky_ptychonn.storage import cxi
from bluesky_ptychonn.storage.cxi import (
    CXIFormatError,
    read_cxi,
    read_reconstruction,
    write_cxi,
    write_reconstruction,
)

N, H, W = 10, 32, 32
DATA = "/entry_1/instrument_1/detector_1/data"
TRANSLATION = "/entry_1/sample_1/geometry_1/translation"


def make_dataset(dtype: type = np.uint16, seed: int = 0, **overrides) -> PtychoDataset:
    rng = np.random.default_rng(seed)
    patterns = rng.poisson(20.0, size=(N, H, W)).astype(dtype)
    yy, xx = np.mgrid[:H, :W] - np.array([H // 2, W // 2])[:, None, None]
    probe = np.exp(-(yy**2 + xx**2) / 50.0) * np.exp(1j * 0.01 * xx)
    valid = np.ones((H, W), dtype=bool)
    valid[3, 5] = valid[0, :] = False
    truth = ComplexImage(
        np.exp(1j * rng.uniform(-1, 1, (40, 48))) * rng.uniform(0.5, 1, (40, 48)),
        pixel_size_m=1.2e-8,
        origin_m=(-2.4e-7, 3.6e-7),
    )
    kwargs = dict(
        patterns=patterns,
        positions_m=rng.uniform(-1e-6, 1e-6, size=(N, 2)),
        energy_ev=8765.4321,
        distance_m=1.5,
        detector_pixel_size_m=75e-6,
        probe=probe.astype(np.complex64),
        valid_mask=valid,
        ground_truth=truth,
        metadata={
            "sample": "siemens star",
            "scan": {"kind": "spiral", "n": N, "step_m": 5e-8, "flags": [True, None, "é"]},
            "simulation": {"seed": seed, "photons": 1.0e9, "nested": {"deep": [1, [2, 3]]}},
        },
    )
    kwargs.update(overrides)
    return PtychoDataset(**kwargs)


def make_reconstruction(seed: int = 1, n_positions: int = N) -> Reconstruction:
    rng = np.random.default_rng(seed)
    obj = ComplexImage(
        rng.normal(size=(50, 60)) + 1j * rng.normal(size=(50, 60)),
        pixel_size_m=9.7e-9,
        origin_m=(-3.1e-7, -2.9e-7),
    )
    return Reconstruction(
        object=obj,
        probe=(rng.normal(size=(2, H, W)) + 1j * rng.normal(size=(2, H, W))).astype(np.complex64),
        positions_m=rng.uniform(-1e-6, 1e-6, size=(n_positions, 2)),
        error_history=np.geomspace(1.0, 1e-3, 25),
        algorithm="epie",
        settings={"iterations": 25, "alpha": 0.9, "probe_update": True, "modes": [1, 2]},
    )


def assert_datasets_equal(a: PtychoDataset, b: PtychoDataset) -> None:
    assert b.patterns.dtype == a.patterns.dtype
    np.testing.assert_array_equal(b.patterns, a.patterns)
    np.testing.assert_array_equal(b.positions_m, a.positions_m)
    assert b.energy_ev == pytest.approx(a.energy_ev, rel=1e-9)
    assert b.distance_m == a.distance_m
    assert b.detector_pixel_size_m == a.detector_pixel_size_m
    for name in ("probe", "valid_mask"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            assert right.dtype == left.dtype, name
            np.testing.assert_array_equal(right, left)
    assert (a.ground_truth is None) == (b.ground_truth is None)
    if a.ground_truth is not None:
        np.testing.assert_array_equal(b.ground_truth.array, a.ground_truth.array)
        assert b.ground_truth.array.dtype == a.ground_truth.array.dtype
        assert b.ground_truth.pixel_size_m == a.ground_truth.pixel_size_m
        assert b.ground_truth.origin_m == a.ground_truth.origin_m
    assert b.metadata == a.metadata


def assert_reconstructions_equal(a: Reconstruction, b: Reconstruction) -> None:
    np.testing.assert_array_equal(b.object.array, a.object.array)
    assert b.object.pixel_size_m == a.object.pixel_size_m
    assert b.object.origin_m == a.object.origin_m
    np.testing.assert_array_equal(b.probe, a.probe)
    np.testing.assert_array_equal(b.positions_m, a.positions_m)
    np.testing.assert_array_equal(b.error_history, a.error_history)
    assert b.algorithm == a.algorithm
    assert b.settings == a.settings


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_dataset_round_trip(tmp_path: Path, dtype: type) -> None:
    dataset = make_dataset(dtype)
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    assert path == tmp_path / "scan.cxi"
    assert_datasets_equal(dataset, read_cxi(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.cxi"]  # no temporary left


def test_written_layout_follows_cxi(tmp_path: Path) -> None:
    dataset = make_dataset()
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    with h5py.File(path, "r") as f:
        assert f["cxi_version"][()] == 160
        data = f[DATA]
        assert data.chunks == (1, H, W) and data.compression == "gzip"
        link = f["/entry_1/data_1"].get("data", getlink=True)
        assert isinstance(link, h5py.SoftLink) and link.path == DATA
        translation = f[TRANSLATION][()]
        assert translation.shape == (N, 3)
        np.testing.assert_array_equal(translation[:, 0], dataset.positions_m[:, 1])  # x
        np.testing.assert_array_equal(translation[:, 1], dataset.positions_m[:, 0])  # y
        np.testing.assert_array_equal(translation[:, 2], 0.0)
        energy_j = f["/entry_1/instrument_1/source_1/energy"][()]
        assert energy_j == pytest.approx(dataset.energy_ev * ELECTRONVOLT_J, rel=1e-12)
        assert f["/entry_1/instrument_1/source_1/wavelength"][()] == pytest.approx(
            dataset.wavelength_m, rel=1e-12
        )
        mask = f["/entry_1/instrument_1/detector_1/mask"][()]
        assert mask.dtype == np.uint32
        np.testing.assert_array_equal(mask != 0, ~dataset.valid_mask)
        assert "illumination" in f["/entry_1/instrument_1/source_1"]
        assert "image_1" not in f["/entry_1"]


def test_minimal_dataset_round_trip_uncompressed(tmp_path: Path) -> None:
    dataset = make_dataset(np.float32, probe=None, valid_mask=None, ground_truth=None, metadata={})
    path = write_cxi(tmp_path / "scan.cxi", dataset, compression=None)
    with h5py.File(path, "r") as f:
        assert f[DATA].compression is None
        assert "mask" not in f["/entry_1/instrument_1/detector_1"]
    assert_datasets_equal(dataset, read_cxi(path))


def test_metadata_tuples_and_numpy_scalars_become_json(tmp_path: Path) -> None:
    dataset = make_dataset(metadata={"shape": (3, 4), "n": np.int64(7), "f": np.float32(0.5)})
    back = read_cxi(write_cxi(tmp_path / "scan.cxi", dataset))
    assert back.metadata == {"shape": [3, 4], "n": 7, "f": 0.5}


def test_reconstruction_round_trip(tmp_path: Path) -> None:
    dataset, recon = make_dataset(), make_reconstruction()
    path = write_cxi(tmp_path / "scan.cxi", dataset, recon)
    assert_reconstructions_equal(recon, read_reconstruction(path))
    assert_reconstructions_equal(recon, read_reconstruction(path, image_index=1))
    assert_datasets_equal(dataset, read_cxi(path))  # illumination wins over image_1/probe


def test_reconstruction_without_optional_fields(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "scan.cxi", make_dataset())
    recon = Reconstruction(ComplexImage(np.ones((8, 9), np.complex64), 1e-8))
    write_reconstruction(path, recon)
    back = read_reconstruction(path)
    assert back.probe is None and back.positions_m is None
    assert back.error_history.shape == (0,)
    assert back.algorithm == "unknown" and back.settings == {}
    assert back.object.array.dtype == np.complex64
    assert back.object.origin_m == (0.0, 0.0)


def test_write_reconstruction_appends_without_disturbing_data(tmp_path: Path) -> None:
    dataset = make_dataset()
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    first, second = make_reconstruction(1), make_reconstruction(2)
    assert write_reconstruction(path, first) == "/entry_1/image_1"
    assert write_reconstruction(path, second) == "/entry_1/image_2"
    assert_datasets_equal(dataset, read_cxi(path))
    assert_reconstructions_equal(second, read_reconstruction(path))  # the last one
    assert_reconstructions_equal(first, read_reconstruction(path, image_index=1))
    assert write_reconstruction(path, first, image_index=5) == "/entry_1/image_5"
    assert_reconstructions_equal(first, read_reconstruction(path))
    with pytest.raises(ValueError, match="image_2 exists"):
        write_reconstruction(path, first, image_index=2)
    with pytest.raises(ValueError, match="image_index"):
        write_reconstruction(path, first, image_index=0)


def test_write_reconstruction_skips_a_probe_only_image_1(tmp_path: Path) -> None:
    dataset = make_dataset(probe=None)
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    initial_probe = np.full((H, W), 1 + 2j, dtype=np.complex64)
    with h5py.File(path, "r+") as f:  # like the shared file: image_1 holds only a probe
        f["/entry_1/image_1/probe"] = initial_probe
    with pytest.raises(CXIFormatError, match="no /entry_1/image_K group with a data"):
        read_reconstruction(path)
    np.testing.assert_array_equal(read_cxi(path).probe, initial_probe)
    recon = make_reconstruction()
    assert write_reconstruction(path, recon) == "/entry_1/image_2"
    assert_reconstructions_equal(recon, read_reconstruction(path))
    np.testing.assert_array_equal(read_cxi(path).probe, initial_probe)  # image_1 untouched


def test_translation_sign_flips_positions(tmp_path: Path) -> None:
    dataset = make_dataset()
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    np.testing.assert_array_equal(
        read_cxi(path, translation_sign=-1).positions_m, -dataset.positions_m
    )
    np.testing.assert_array_equal(
        read_cxi(path, translation_sign=+1).positions_m, dataset.positions_m
    )
    for bad in (0, 2, -1.5, True, "+1"):
        with pytest.raises(ValueError, match="translation_sign"):
            read_cxi(path, translation_sign=bad)


def test_foreign_mask_bits(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "scan.cxi", make_dataset(valid_mask=None))
    mask = np.zeros((H, W), dtype=np.uint16)
    mask[0, 0] = 2  # saturated: bad
    mask[0, 1] = 32  # in peak mask: informational only
    mask[0, 2] = 512 | 2048  # missing + artifact-corrected: bad
    with h5py.File(path, "r+") as f:
        f["/entry_1/instrument_1/detector_1/mask"] = mask
    valid = read_cxi(path).valid_mask
    assert valid.dtype == bool
    assert np.flatnonzero(~valid).tolist() == [0, 2]


def test_data_only_behind_data_1_and_energy_from_wavelength(tmp_path: Path) -> None:
    dataset = make_dataset()
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    with h5py.File(path, "r+") as f:
        f.move(DATA, "/entry_1/data_1/stack")
        del f["/entry_1/data_1/data"]
        f["/entry_1/data_1/data"] = h5py.SoftLink("/entry_1/data_1/stack")
        del f["/entry_1/instrument_1/source_1/energy"]
    back = read_cxi(path)
    np.testing.assert_array_equal(back.patterns, dataset.patterns)
    assert back.energy_ev == pytest.approx(dataset.energy_ev, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# The shared reference file (real measurements)


@pytest.fixture(scope="module")
def siemens_star_path(shared_data_dir: Path) -> Path:
    path = shared_data_dir / "siemens-star-tike.cxi"
    if not path.is_file():
        pytest.fail(f"reference file {path} is missing", pytrace=False)
    return path


@pytest.fixture(scope="module")
def siemens_star(siemens_star_path: Path) -> PtychoDataset:
    return read_cxi(siemens_star_path)


def test_reads_shared_siemens_star(siemens_star_path: Path, siemens_star: PtychoDataset) -> None:
    d = siemens_star
    assert d.patterns.shape == (516, 128, 128)
    assert d.patterns.dtype == np.float32
    assert d.patterns.min() >= 0
    assert d.patterns.max() == 963
    np.testing.assert_array_equal(d.patterns, np.round(d.patterns))  # photon counts
    assert d.positions_m.shape == (516, 2)
    assert np.abs(d.positions_m).max() <= 1.7e-6
    assert np.abs(d.positions_m).max() > 1e-6  # metres, not pixels or micrometres
    with h5py.File(siemens_star_path, "r") as f:
        translation = f[TRANSLATION][()]
    np.testing.assert_array_equal(d.positions_m[:, 0], translation[:, 1])  # y
    np.testing.assert_array_equal(d.positions_m[:, 1], translation[:, 0])  # x
    assert d.energy_ev == pytest.approx(10_000.0, rel=1e-6)
    assert d.object_pixel_size_m == pytest.approx(10e-9, rel=1e-6)
    assert d.detector_pixel_size_m == pytest.approx(75e-6)
    assert d.probe is not None and d.probe.shape == (128, 128)
    assert np.iscomplexobj(d.probe) and np.abs(d.probe).max() > 0
    assert d.valid_mask is None
    assert d.ground_truth is None
    assert d.metadata == {}


def test_write_reconstruction_into_copy_of_shared_file(
    tmp_path: Path, siemens_star_path: Path, siemens_star: PtychoDataset
) -> None:
    path = tmp_path / "star.cxi"
    shutil.copyfile(siemens_star_path, path)
    recon = make_reconstruction(n_positions=516)
    assert write_reconstruction(path, recon) == "/entry_1/image_2"
    assert_reconstructions_equal(recon, read_reconstruction(path))
    again = read_cxi(path)
    np.testing.assert_array_equal(again.probe, siemens_star.probe)
    np.testing.assert_array_equal(again.positions_m, siemens_star.positions_m)


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_data_names_the_path(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "scan.cxi", make_dataset())
    with h5py.File(path, "r+") as f:
        del f[DATA]  # leaves /entry_1/data_1/data dangling
    with pytest.raises(CXIFormatError, match=f"{path}.*missing {DATA}"):
        read_cxi(path)


def test_text_file_is_not_cxi(tmp_path: Path) -> None:
    path = tmp_path / "notes.cxi"
    path.write_text("not an HDF5 file\n")
    with pytest.raises(CXIFormatError, match="not an HDF5"):
        read_cxi(path)
    with pytest.raises(CXIFormatError, match="not an HDF5"):
        read_reconstruction(path)
    with pytest.raises(CXIFormatError, match="not an HDF5"):
        write_reconstruction(path, make_reconstruction())
    assert path.read_text() == "not an HDF5 file\n"
    assert issubclass(CXIFormatError, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_cxi(tmp_path / "absent.cxi")


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "scan.cxi"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_cxi(path, make_dataset())
    assert path.read_bytes() == b"precious"
    write_cxi(path, make_dataset(), overwrite=True)
    assert_datasets_equal(make_dataset(), read_cxi(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.cxi"]


def test_mismatched_translations_on_read(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "scan.cxi", make_dataset())
    with h5py.File(path, "r+") as f:
        translation = f[TRANSLATION][()]
        del f[TRANSLATION]
        f[TRANSLATION] = translation[:-1]
    with pytest.raises(CXIFormatError, match=f"{N - 1} positions but .* {N} patterns"):
        read_cxi(path)


def test_mismatched_translations_on_write(tmp_path: Path) -> None:
    dataset = make_dataset()
    dataset.positions_m = dataset.positions_m[:-1]  # mutated after validation
    with pytest.raises(ValueError, match="positions"):
        write_cxi(tmp_path / "scan.cxi", dataset)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("/entry_1/instrument_1/source_1/energy", "source_1/energy"),
        ("/entry_1/instrument_1/detector_1/distance", "detector_1/distance"),
        ("/entry_1/instrument_1/detector_1/x_pixel_size", "x_pixel_size"),
        (TRANSLATION, "geometry_1/translation"),
    ],
)
def test_missing_geometry_is_named(tmp_path: Path, item: str, message: str) -> None:
    path = write_cxi(tmp_path / "scan.cxi", make_dataset())
    with h5py.File(path, "r+") as f:
        del f[item]
        if item.endswith("energy"):
            del f["/entry_1/instrument_1/source_1/wavelength"]
        if item.endswith("x_pixel_size"):
            del f["/entry_1/instrument_1/detector_1/y_pixel_size"]
    with pytest.raises(CXIFormatError, match=f"{path}: missing .*{message}"):
        read_cxi(path)


def test_non_square_detector_pixels_rejected(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "scan.cxi", make_dataset())
    with h5py.File(path, "r+") as f:
        f["/entry_1/instrument_1/detector_1/y_pixel_size"][()] = 55e-6
    with pytest.raises(CXIFormatError, match="non-square"):
        read_cxi(path)


@pytest.mark.parametrize(
    ("metadata", "error", "where"),
    [
        ({"rng": np.random.default_rng(0)}, TypeError, r"metadata\['rng'\]"),
        ({"a": {"b": [1, {2, 3}]}}, TypeError, r"metadata\['a'\]\['b'\]\[1\] is a set"),
        ({"array": np.zeros(3)}, TypeError, r"tolist"),
        ({1: "int key"}, TypeError, "key 1"),
        ({"x": float("nan")}, ValueError, "NaN"),
    ],
)
def test_bad_metadata_writes_nothing(tmp_path: Path, metadata, error, where) -> None:
    with pytest.raises(error, match=where):
        write_cxi(tmp_path / "scan.cxi", make_dataset(metadata=metadata))
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_writes_nothing(tmp_path: Path) -> None:
    recon = make_reconstruction()
    recon.settings = {"callback": print}
    with pytest.raises(TypeError, match="settings"):
        write_cxi(tmp_path / "scan.cxi", make_dataset(), recon)
    assert list(tmp_path.iterdir()) == []
    path = write_cxi(tmp_path / "scan.cxi", make_dataset())
    with pytest.raises(TypeError, match="settings"):
        write_reconstruction(path, recon)
    with h5py.File(path, "r") as f:
        assert "image_1" not in f["/entry_1"]


def test_failure_while_writing_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    real = cxi._write_contents

    def fail_half_way(f, *args, **kwargs):
        real(f, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(cxi, "_write_contents", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_cxi(tmp_path / "scan.cxi", make_dataset())
    assert list(tmp_path.iterdir()) == []


def test_nan_frames_are_listed(tmp_path: Path) -> None:
    dataset = make_dataset(np.float32)
    dataset.patterns[3, 1, 1] = np.nan
    dataset.patterns[7, 0, 5] = np.inf
    path = write_cxi(tmp_path / "scan.cxi", dataset)
    with pytest.raises(CXIFormatError, match=r"2 of 10 patterns.*frames 3, 7.*allow_nan=True"):
        read_cxi(path)
    back = read_cxi(path, allow_nan=True)
    assert np.isnan(back.patterns[3, 1, 1]) and np.isinf(back.patterns[7, 0, 5])


def test_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        write_cxi(tmp_path / "scan.cxi", make_dataset(), compression="zstd")
    assert list(tmp_path.iterdir()) == []
