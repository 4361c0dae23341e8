"""`bluesky-ptychonn infer` and `reconstruct --initial-object`: the network image of a recorded
scan as a file ePIE can start from; clear errors before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.storage.cxi import read_cxi, read_reconstruction, write_cxi

SIM = ["simulate", "--sample", "etched", "--scan", "spiral", "--photons", "1e6",
       "--detector", "eiger", "--extent", "0.8e-6", "--overlap", "0.5", "--no-figure"]  # fmt: skip


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("scan") / "scan.cxi"
    assert main([*SIM, "--out", str(out)]) == 0
    return out


@pytest.fixture
def model_128(tmp_path, tiny_model):
    """An untrained network for 128x128 frames, cropped to 32x32 (4x coarser patch pixels)."""
    return tiny_model(tmp_path / "model", input_px=32, frame_px=128, reduce="crop")


def test_infer_writes_the_mosaic_like_a_reconstruction(tmp_path, scan_file, model_128, capsys):
    out = tmp_path / "mosaic.cxi"
    capsys.readouterr()
    assert main(["infer", str(scan_file), "--model", str(model_128), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scan = read_cxi(scan_file)
    image = read_reconstruction(out)
    assert image.algorithm == "ptychonn-stitch"
    assert np.iscomplexobj(image.object.array) and np.any(image.object.array != 0)
    assert image.object.pixel_size_m == pytest.approx(4 * scan.object_pixel_size_m)
    assert summary["frames"] == scan.n_patterns
    assert summary["weight_source"] == "dataset"  # the scan's probe, not the default Gaussian
    assert image.settings["weight_source"] == "dataset"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_model_for_other_patterns_is_refused_before_any_work(
    tmp_path, scan_file, tiny_model, capsys, monkeypatch
):
    from bluesky_ptychonn.model import checkpoint

    model = tiny_model(tmp_path / "model", input_px=32, frame_px=64, reduce="bin")

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were loaded before the shapes were checked")

    monkeypatch.setattr(checkpoint, "load_model", no_loading)
    out = tmp_path / "mosaic.cxi"
    assert main(["infer", str(scan_file), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "128x128" in err and "64x64" in err and "model takes" in err
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_reconstruct_starts_from_the_network_image(tmp_path, scan_file, model_128, capsys):
    mosaic = tmp_path / "mosaic.cxi"
    assert main(["infer", str(scan_file), "--model", str(model_128), "--out", str(mosaic)]) == 0
    out = tmp_path / "recon.cxi"
    capsys.readouterr()
    status = main(["reconstruct", str(scan_file), "--iterations", "2", "--quiet", "--threads",
                   "1", "--initial-object", str(mosaic), "--out", str(out)])  # fmt: skip
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["initial_object"] == str(mosaic)
    result = read_reconstruction(out)
    assert result.object.pixel_size_m == pytest.approx(read_cxi(scan_file).object_pixel_size_m)


def test_an_initial_object_of_another_region_is_refused(tmp_path, scan_file, model_128, capsys):
    mosaic = tmp_path / "mosaic.cxi"
    assert main(["infer", str(scan_file), "--model", str(model_128), "--out", str(mosaic)]) == 0
    moved = read_reconstruction(mosaic)
    moved.object.origin_m = (moved.object.origin_m[0] + 5e-6, moved.object.origin_m[1])
    elsewhere = tmp_path / "elsewhere.cxi"
    write_cxi(elsewhere, read_cxi(scan_file), moved)
    out = tmp_path / "recon.cxi"
    status = main(["reconstruct", str(scan_file), "--quiet", "--initial-object",
                   str(elsewhere), "--out", str(out)])  # fmt: skip
    assert status == 2
    assert "another scan region" in capsys.readouterr().err
    assert not out.exists()


def test_infer_with_an_uncertainty_model_writes_the_uncertainty_mosaic(
    tmp_path, scan_file, capsys
):
    import h5py
    import torch

    from bluesky_ptychonn.model.architectures import build_model
    from bluesky_ptychonn.model.checkpoint import save_model
    from bluesky_ptychonn.model.preprocessing import Preprocessing

    torch.manual_seed(0)
    net = build_model("edge", input_shape=32, base_channels=4, uncertainty=True)
    prep = Preprocessing(input_shape=(32, 32), frame_shape=(128, 128), reduce="crop")
    sigmas = {}
    for scale in (1.0, 2.0):
        model = save_model(
            net, tmp_path / f"model{scale:g}", prep, uncertainty={"calibration_scale": scale}
        )
        out = tmp_path / f"mosaic{scale:g}.cxi"
        capsys.readouterr()
        assert main(["infer", str(scan_file), "--model", str(model), "--out", str(out)]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["phase_uncertainty"] is True
        with h5py.File(out, "r") as f:
            sigmas[scale] = f["entry_1/image_1/phase_uncertainty"][()]
            data = f["entry_1/image_1/data"][()]
    sigma = sigmas[2.0]
    assert sigma.shape == data.shape
    measured = np.isfinite(sigma)
    assert measured.any() and np.all(sigma[measured] > 0)
    assert np.all(np.abs(data[~measured]) == 0)  # no sigma where nothing was stitched
    # the sidecar's calibration is applied: twice the scale, twice the stated sigma
    np.testing.assert_allclose(sigma[measured], 2 * sigmas[1.0][measured], rtol=1e-5)
