"""DIV2K paired layout and the SR test sets (Set5, Set14, ...)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lit_diffsr.data.prepare.resize import crop_to_multiple


def build_div2k(source) -> None:
    """train: 0001 RGB, 0002 grayscale, 0003 with a wrong-size X4 LR, 0004 without X2 LR; valid: 0801."""
    for split, number, gray in [
        ("train", 1, False),
        ("train", 2, True),
        ("train", 3, False),
        ("train", 4, False),
        ("valid", 801, False),
    ]:
        hr = source.image(f"DIV2K_{split}_HR/{number:04d}.png", 48, 36, gray=gray)
        for scale in (2, 4):
            if (number, scale) == (4, 2):
                continue
            with Image.open(hr) as image:
                size = (13, 9) if (number, scale) == (3, 4) else (48 // scale, 36 // scale)
                source.save(
                    f"DIV2K_{split}_LR_bicubic/X{scale}/{number:04d}x{scale}.png",
                    image.resize(size, Image.Resampling.BICUBIC),
                )


def test_div2k_paired_layout(source, prepare, pixels, tmp_path) -> None:
    build_div2k(source)
    status, report = prepare("div2k", "--scales", "2", "4", "--expect", "train=3-4", "valid=1")
    out = tmp_path / "dst" / "DIV2K"
    assert sorted(p.name for p in (out / "train/HR").iterdir()) == [
        "0001.png",
        "0002.png",
        "0003.png",
        "0004.png",
    ]
    assert sorted(p.name for p in (out / "train/LR_bicubic/X2").iterdir()) == [
        "0001.png",
        "0002.png",
        "0003.png",
    ]
    assert sorted(p.name for p in (out / "train/LR_bicubic/X4").iterdir()) == [
        "0001.png",
        "0002.png",
        "0004.png",
    ]
    assert [p.name for p in (out / "valid/LR_bicubic/X4").iterdir()] == ["0801.png"]
    # An RGB PNG is copied byte for byte; the grayscale one becomes RGB with equal channels.
    assert (out / "train/HR/0001.png").read_bytes() == (source.root / "DIV2K_train_HR/0001.png").read_bytes()
    gray = pixels(out / "train/HR/0002.png")
    assert gray.shape == (36, 48, 3) and (gray == gray[..., :1]).all()
    assert pixels(out / "train/LR_bicubic/X4/0002.png").shape == (9, 12, 3)
    failed = {f["source"].rsplit("/", 1)[-1]: f["reason"] for f in report["failed_sources"]}
    assert set(failed) == {"0003x4.png", "0004x2.png"}
    assert "not x4" in failed["0003x4.png"] and failed["0004x2.png"].startswith("FileNotFoundError")
    assert status == 1 and report["mismatches"] == []


def test_div2k_missing_scale_folder_is_a_clear_error(source, prepare, capsys) -> None:
    build_div2k(source)
    status, _ = prepare("div2k", "--scales", "3")
    assert status == 2 and "DIV2K_train_LR_bicubic/X3" in capsys.readouterr().err


def test_srtest_crops_to_the_scale_and_downsamples_with_pil_bicubic(
    source, prepare, pixels, tmp_path
) -> None:
    source.image("Set5/HR/baby.png", 50, 37)
    source.image("Set5/HR/bird.png", 41, 33, gray=True)
    source.image("set14/comic.png", 45, 31)  # no HR/ sub-folder, lower-case set name
    status, report = prepare(
        "srtest", "--sets", "Set5", "Set14", "--scales", "3", "4", "--expect", "Set5=2", "1"
    )
    dst = tmp_path / "dst"
    for scale in (3, 4):
        with Image.open(source.root / "Set5/HR/baby.png") as original:
            hr = crop_to_multiple(original, scale)
        assert pixels(dst / f"Set5/X{scale}/HR/baby.png").shape == (37 - 37 % scale, 50 - 50 % scale, 3)
        np.testing.assert_array_equal(pixels(dst / f"Set5/X{scale}/HR/baby.png"), np.asarray(hr))
        lr = hr.resize((hr.width // scale, hr.height // scale), Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(pixels(dst / f"Set5/X{scale}/LR/baby.png"), np.asarray(lr))
        gray = pixels(dst / f"Set5/X{scale}/LR/bird.png")
        assert gray.shape == (33 // scale, 41 // scale, 3) and (gray == gray[..., :1]).all()
        assert (dst / f"Set14/X{scale}/LR/comic.png").exists()
    assert status == 0 and report["failed_sources"] == [] and report["mismatches"] == []


def test_srtest_missing_set_is_a_clear_error(source, prepare, capsys) -> None:
    source.image("Set5/HR/baby.png", 50, 37)
    status, _ = prepare("srtest")  # default: all four sets
    assert status == 2 and "no Set14 images" in capsys.readouterr().err


def test_srtest_reads_the_selfexsr_layout(source, prepare, pixels, tmp_path) -> None:
    # SelfExSR's release: HR and LR of each factor, and other methods' outputs beside them.
    for scale, (width, height) in ((2, (50, 36)), (4, (48, 36))):
        folder = f"Set5/SelfExSR/image_SRF_{scale}"
        source.image(f"{folder}/img_001_SRF_{scale}_HR.png", width, height)
        source.image(f"{folder}/img_001_SRF_{scale}_LR.png", width // scale, height // scale)
        source.image(f"{folder}/img_001_SRF_{scale}_glasner.png", width, height)
    status, report = prepare("srtest", "--sets", "Set5", "--scales", "4", "--expect", "1")
    dst = tmp_path / "dst" / "Set5" / "X4"
    assert [p.name for p in (dst / "HR").iterdir()] == ["img_001.png"]  # the HR only, SelfExSR's suffix gone
    with Image.open(source.root / "Set5/SelfExSR/image_SRF_2/img_001_SRF_2_HR.png") as least_cropped:
        expected = np.asarray(crop_to_multiple(least_cropped, 4))
    np.testing.assert_array_equal(pixels(dst / "HR/img_001.png"), expected)
    assert pixels(dst / "LR/img_001.png").shape == (9, 12, 3)
    assert status == 0 and report["failed_sources"] == []
