"""`evaluate_folders` and its command line on folders written in tmp_path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_diffsr.errors import ConfigError
from lit_diffsr.evaluate import METRICS, evaluate_folders, main
from lit_diffsr.metrics.image import psnr, ssim


def write_folders(root: Path, stems=("a", "b", "c"), size: int = 64, scale: int = 2) -> dict[str, Path]:
    """ref/<stem>.png, pred/<stem>.png (ref plus noise) and lr/<stem>.png (ref reduced by `scale`)."""
    rng = np.random.default_rng(0)
    folders = {name: root / name for name in ("ref", "pred", "lr")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for stem in stems:
        ramp = np.linspace(0, 200, size)[None, :, None] + rng.integers(0, 50, (size, size, 3))
        ref = np.clip(ramp, 0, 255).astype(np.uint8)
        pred = np.clip(ref + rng.integers(-12, 13, ref.shape), 0, 255).astype(np.uint8)
        Image.fromarray(ref).save(folders["ref"] / f"{stem}.png")
        Image.fromarray(pred).save(folders["pred"] / f"{stem}.png")
        Image.fromarray(ref).resize((size // scale,) * 2, Image.Resampling.BICUBIC).save(
            folders["lr"] / f"{stem}.png"
        )
    return folders


def as_tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].double()


def test_all_metrics_are_written_and_well_formed(tmp_path, random_lpips_file):
    folders = write_folders(tmp_path)
    out = tmp_path / "report"
    result = evaluate_folders(
        folders["pred"],
        folders["ref"],
        lr_dir=folders["lr"],
        scale=2,
        out_dir=out,
        lpips_weights=random_lpips_file,
    )
    columns = ["psnr_y", "ssim_y", "lpips", "consistency"]
    assert result["num_images"] == 3 and set(result["summary"]) == {*columns, "fid"}

    stored = json.loads((out / "metrics.json").read_text())
    assert stored["summary"] == pytest.approx(result["summary"])
    assert [row["name"] for row in stored["per_image"]] == ["a", "b", "c"]
    with (out / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["name", *columns] and len(rows) == 3
    # per-image values are the metric of the files: Y channel, shave = scale
    pred, ref = as_tensor(folders["pred"] / "b.png"), as_tensor(folders["ref"] / "b.png")
    assert float(rows[1]["psnr_y"]) == pytest.approx(
        psnr(pred, ref, 255.0, y_channel=True, shave=2).item(), rel=1e-6
    )
    assert float(rows[1]["ssim_y"]) == pytest.approx(
        ssim(pred, ref, 255.0, y_channel=True, shave=2).item(), rel=1e-6
    )
    assert result["summary"]["psnr_y"] == pytest.approx(np.mean([float(r["psnr_y"]) for r in rows]))
    assert all(float(r["lpips"]) > 0 and float(r["consistency"]) > 0 for r in rows)  # plumbing only
    with (out / "summary.csv").open() as stream:
        summary = dict(csv.reader(stream))
    assert summary["metric"] == "value" and summary["num_images"] == "3"
    assert float(summary["fid"]) == pytest.approx(result["summary"]["fid"]) and float(summary["fid"]) > 0
    markdown = (out / "metrics.md").read_text().splitlines()
    assert "| metric | value |" in markdown and "| num_images | 3 |" in markdown
    assert "| name | psnr_y | ssim_y | lpips | consistency |" in markdown
    assert sum(line.startswith("| b |") for line in markdown) == 1


def test_unmatched_stems_are_listed(tmp_path):
    folders = write_folders(tmp_path, size=24)
    (folders["pred"] / "c.png").rename(folders["pred"] / "z.png")
    with pytest.raises(
        ConfigError, match=r"(?s)in pred_dir but not ref_dir \(1\): z.*in ref_dir but not pred_dir \(1\): c"
    ):
        evaluate_folders(folders["pred"], folders["ref"], metrics=("psnr",))


def test_identical_images_have_infinite_psnr_written_as_null_and_inf(tmp_path):
    folders = write_folders(tmp_path, size=24)
    result = evaluate_folders(
        folders["ref"], folders["ref"], y_channel=False, metrics=("psnr", "ssim"), out_dir=tmp_path
    )
    assert result["summary"]["psnr"] == float("inf") and result["summary"]["ssim"] == pytest.approx(1.0)
    stored = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no Infinity token
    assert stored["summary"]["psnr"] is None and stored["per_image"][0]["psnr"] is None
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1].startswith("a,inf,")


def test_reference_larger_by_less_than_the_scale_is_cropped_else_an_error(tmp_path):
    folders = write_folders(tmp_path, stems=("a",), size=24)
    Image.open(folders["ref"] / "a.png").crop((0, 0, 23, 23)).save(folders["pred"] / "a.png")
    result = evaluate_folders(folders["pred"], folders["ref"], scale=2, metrics=("psnr",))
    assert result["summary"]["psnr_y"] == float("inf")  # the top-left 23x23 of the reference
    with pytest.raises(ConfigError, match="prediction is 23x23 but the reference is 24x24"):
        evaluate_folders(folders["pred"], folders["ref"], scale=1, metrics=("psnr",))


def test_command_line_runs_and_reports_bad_arguments(tmp_path, capsys):
    folders = write_folders(tmp_path, size=24)
    result = main(
        [f"pred_dir={folders['pred']}", f"ref_dir={folders['ref']}", "scale=2", "metrics=[psnr,ssim]"]
    )
    assert result["config"]["scale"] == 2 and set(result["summary"]) == {"psnr_y", "ssim_y"}
    assert "| psnr_y |" in capsys.readouterr().out
    assert (folders["pred"] / "metrics.json").is_file()  # out_dir defaults to pred_dir
    for argv, message in (
        ([f"pred_dir={folders['pred']}"], "ref_dir required"),
        ([f"pred_dir={folders['pred']}", f"ref_dir={folders['ref']}", "scale=x"], "scale must be a positive"),
        (
            [f"pred_dir={folders['pred']}", f"ref_dir={folders['ref']}", "metrics=psnr,niqe"],
            "unknown ['niqe']",
        ),
        ([f"pred_dir={folders['pred']}", f"ref_dir={tmp_path / 'none'}"], "is not a folder"),
        (["pred_dir", "ref_dir=x"], "unexpected argument 'pred_dir'"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        error = capsys.readouterr().err
        assert message in error, (argv, error)


def test_default_arguments_run_offline_and_say_in_one_line_what_was_skipped(tmp_path, capsys):
    """The cache is empty (no LPIPS weights) and nothing can be downloaded: every other metric runs, and
    one line names the skipped metric and how to enable it."""
    folders = write_folders(tmp_path, size=32)
    result = main([f"pred_dir={folders['pred']}", f"ref_dir={folders['ref']}", "scale=2"])
    assert set(result["summary"]) == {"psnr_y", "ssim_y", "fid"}
    assert set(result["skipped"]) == {"lpips"}
    errors = capsys.readouterr().err.splitlines()
    skip_lines = [line for line in errors if line.startswith("evaluate: skipped")]
    assert skip_lines == [
        "evaluate: skipped lpips: its weights are not cached: run `python -m lit_diffsr weights fetch` once "
        "where there is internet (a login node) or pass lpips_weights=FILE"
    ]
    assert [line for line in errors if line.startswith("warning: FID of 3 images")] and len(errors) == 2
    stored = json.loads((folders["pred"] / "metrics.json").read_text())
    assert set(stored["skipped"]) == {"lpips"} and stored["config"]["metrics"] == list(METRICS)
    # A metric asked for by name must run: the missing weights are then an error, exit status 2.
    with pytest.raises(SystemExit) as exited:
        main([f"pred_dir={folders['pred']}", f"ref_dir={folders['ref']}", "metrics=psnr,lpips"])
    assert exited.value.code == 2
    assert "error: weight file lpips_alex_v0.1_full.pth" in capsys.readouterr().err


def save_grey(pixels: np.ndarray, path: Path, as_rgb: bool = False) -> None:
    image = Image.fromarray(pixels.astype(np.uint8), mode="L")
    (image.convert("RGB") if as_rgb else image).save(path)


def test_greyscale_is_scored_on_its_grey_channel_as_the_sr_convention_does(tmp_path):
    """Closed form: prediction = reference +- 5 in a checkerboard, so MSE = 25 on 8-bit values and PSNR =
    10 log10(255^2 / 25) = 34.151 dB on the grey channel. A greyscale file is its own Y (MATLAB's scripts
    score Set14's bridge so), also against an RGB copy of it (what a model outputs); an RGB file, even with
    equal channels (Set14's man), goes through BT.601's studio range, which scales differences by 219/255."""
    rng = np.random.default_rng(3)
    ref = rng.integers(20, 236, (40, 40))
    checker = np.where(np.add.outer(np.arange(40), np.arange(40)) % 2 == 0, 5, -5)
    grey_psnr = 10 * np.log10(255**2 / 25)
    cases = {  # (prediction as RGB, reference as RGB) -> expected PSNR_Y
        (False, False): grey_psnr,
        (True, False): grey_psnr,
        (False, True): grey_psnr,
        (True, True): grey_psnr + 20 * np.log10(255 / 219),
    }
    for (pred_rgb, ref_rgb), expected in cases.items():
        folder = tmp_path / f"pred{pred_rgb:d}_ref{ref_rgb:d}"
        (folder / "pred").mkdir(parents=True)
        (folder / "ref").mkdir()
        save_grey(ref + checker, folder / "pred" / "bridge.png", as_rgb=pred_rgb)
        save_grey(ref, folder / "ref" / "bridge.png", as_rgb=ref_rgb)
        scored = evaluate_folders(folder / "pred", folder / "ref", scale=4, metrics=("psnr", "ssim"))
        # PSNR comes back as float32
        assert scored["summary"]["psnr_y"] == pytest.approx(expected, abs=1e-5), (pred_rgb, ref_rgb)
        assert 0 < scored["summary"]["ssim_y"] < 1
        rgb = evaluate_folders(folder / "pred", folder / "ref", scale=4, y_channel=False, metrics=("psnr",))
        assert rgb["summary"]["psnr"] == pytest.approx(grey_psnr, abs=1e-5)  # RGB: the grey value thrice


@pytest.mark.parametrize(
    ("size", "scale", "lr_size", "message"),
    [
        (24, 2, 10, "lr/a.png: the low-resolution image is 10x10, so with scale=2 the prediction should be "
         "20x20, but a.png is 24x24; check lr_dir and scale"),
        (8, 4, 2, "a.png: the image is 8x8, and PSNR/SSIM shave scale=4 pixels from each border"),
        (14, 2, 7, "a.png: SSIM needs 11x11 pixels after shaving scale=2 from each border, and the 14x14 "
         "image leaves 10x10; drop ssim from metrics="),
    ],
)  # fmt: skip
def test_images_the_metrics_cannot_score_are_one_line_each(tmp_path, capsys, size, scale, lr_size, message):
    folders = write_folders(tmp_path, stems=("a",), size=size, scale=2)
    Image.open(folders["ref"] / "a.png").resize((lr_size, lr_size)).save(folders["lr"] / "a.png")
    argv = [f"pred_dir={folders['pred']}", f"ref_dir={folders['ref']}", f"lr_dir={folders['lr']}"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, f"scale={scale}", "metrics=psnr,ssim"])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and message in error, error
