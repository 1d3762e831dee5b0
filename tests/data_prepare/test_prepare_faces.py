"""FFHQ / CelebA-HQ: flat folders at the SR3 resolutions, from nested source trees."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lit_diffsr.data.prepare.resize import resize_square


def test_ffhq_nested_tree_to_flat_folders(source, prepare, pixels, tmp_path) -> None:
    source.image("images1024x1024/00000/00000.png", 256, 256)
    source.image("images1024x1024/00000/00001.png", 256, 256, gray=True)
    source.image("images1024x1024/01000/01000.png", 256, 256)
    source.corrupt("images1024x1024/01000/01001.png")
    status, report = prepare("ffhq", "--expect", "3")
    dst = tmp_path / "dst"
    for res in (16, 128):
        assert sorted(p.name for p in (dst / str(res)).iterdir()) == ["00000.png", "00001.png", "01000.png"]
        assert all(pixels(path).shape == (res, res, 3) for path in (dst / str(res)).iterdir())
    with Image.open(source.root / "images1024x1024/01000/01000.png") as original:
        np.testing.assert_array_equal(pixels(dst / "128/01000.png"), np.asarray(resize_square(original, 128)))
    assert [f["source"].rsplit("/", 1)[-1] for f in report["failed_sources"]] == ["01001.png"]
    assert status == 1 and report["mismatches"] == []


def test_celebahq_default_count_and_duplicate_names(source, prepare, capsys) -> None:
    source.image("CelebA-HQ-img/0.jpg", 64, 64)
    source.image("CelebA-HQ-img/1.jpg", 64, 64)
    status, report = prepare("celebahq", "--resolutions", "16")
    assert status == 1 and report["mismatches"] == [
        f"{report['counts'][0]['folder']}: 2 files, expected 30000"
    ]
    source.image("other/1.png", 64, 64)  # the flat output cannot hold two files named 1.png
    status, _ = prepare("celebahq", "--resolutions", "16")
    assert status == 2 and "share the name '1'" in capsys.readouterr().err
