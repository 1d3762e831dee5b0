"""Bad input as a hostile or unlucky user gives it, through the real CLI: every case ends with exit code 2,
one `error:` line that names the key or file to fix, and no traceback (HYDRA_FULL_ERROR unset, as for a
user; `--debug` shows the traceback)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e

SMOKE = ["debug=smoke", "num_threads=1", "callbacks.progress=null"]  # debug=smoke reads the demo photos:
FIT = ["fit", "experiment=quickstart", *SMOKE]


def run_as_user(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", WANDB_MODE="offline")
    command = [sys.executable, "-m", "lit_diffsr", *args, *(["--debug"] if debug else [])]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def assert_user_error(result: subprocess.CompletedProcess, *named: str) -> str:
    """Exit 2, no traceback, and the one `error:` line names every string in `named`."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def photo(size: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def folder_of(root: pathlib.Path, write, count: int = 6) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write(root, index)
    return root


def truncated_png(root, index):
    path = root / f"img{index}.png"
    photo(24, index).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def text_as_png(root, index):
    (root / f"notes{index}.png").write_text("this is not an image\n")


def float_tiff(root, index):
    Image.fromarray(np.random.default_rng(index).random((24, 24)).astype(np.float32), mode="F").save(
        root / f"float{index}.tif"
    )


def good_png(root, index, size=24):
    photo(size, index).save(root / f"img{index}.png")


UNLABELLED = ["data=folder", "data.dataset=folder", "model.num_classes=null", "data.resolution=16"]


@pytest.mark.parametrize("write, named", [
    (truncated_png, ["img", ".png", "data.skip_corrupt=true"]),
    (text_as_png, ["notes", ".png", "data.skip_corrupt=true"]),
    (float_tiff, ["float", ".tif", "floating-point"]),
], ids=["truncated-png", "text-named-png", "float-tiff"])
def test_unreadable_images_name_the_file_and_the_switch(tmp_path, write, named):
    root = folder_of(tmp_path / "images", write)
    result = run_as_user(*FIT, *UNLABELLED, f"data.root={root}", f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, *named)


def test_unreadable_image_in_a_dataloader_worker_is_one_line_too(tmp_path):
    root = folder_of(tmp_path / "images", truncated_png)
    result = run_as_user(*FIT, *UNLABELLED, f"data.root={root}", "data.num_workers=1",
                         f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, "cannot read image", ".png")


def test_skip_corrupt_is_a_data_key_and_skips(tmp_path):
    root = folder_of(tmp_path / "images", good_png)
    truncated_png(root, 99)
    result = run_as_user(*FIT, *UNLABELLED, f"data.root={root}", "data.skip_corrupt=true",
                         f"paths.output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping corrupt image" in result.stderr and "img99.png" in result.stderr


@pytest.mark.parametrize("make_root, named", [
    (lambda tmp: tmp / "nowhere", ["data.root=", "nowhere"]),
    (lambda tmp: folder_of(tmp / "empty", lambda root, index: None), ["data.root=", "contains no images"]),
], ids=["missing-root", "empty-root"])
def test_missing_or_empty_data_root(tmp_path, make_root, named):
    root = make_root(tmp_path)
    result = run_as_user(*FIT, *UNLABELLED, f"data.root={root}", f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, *named)


def test_unset_data_root_names_the_key(tmp_path):
    result = run_as_user(*FIT, "data=folder", f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, "data.root is not set")


def test_unlabelled_folder_with_a_class_conditional_model(tmp_path):
    root = folder_of(tmp_path / "flat", good_png)
    result = run_as_user(*FIT, "data=folder", "data.dataset=folder", "data.resolution=16",
                         f"data.root={root}", f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, "model.num_classes=10", "no labels", "model.num_classes=null")


def test_small_image_error_policy_names_the_image(tmp_path):
    root = folder_of(tmp_path / "small", lambda root, index: good_png(root, index, size=8))
    result = run_as_user(*FIT, *UNLABELLED, f"data.root={root}", "+data.small_image=error",
                         f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, "img", "smaller than the crop size 16", "small_image='upscale'")


def paired(tmp_path: pathlib.Path, sizes: dict[str, tuple[int, int]], lr_names: dict[str, str] | None = None):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    hr.mkdir()
    lr.mkdir()
    for index, (name, (hr_size, lr_size)) in enumerate(sizes.items()):
        photo(hr_size, index).save(hr / f"{name}.png")
        photo(lr_size, index).save(lr / f"{(lr_names or {}).get(name, name)}.png")
    return ["fit", "experiment=i2sb_quickstart", *SMOKE, "data=paired", "data.dataset=paired",
            f"data.hr_root={hr}", f"data.lr_root={lr}", "data.degradation=null", "data.resolution=16",
            f"paths.output_dir={tmp_path / 'run'}"]


@pytest.mark.parametrize("sizes, lr_names, named", [
    ({"a": (32, 16), "b": (32, 16)}, {"b": "zzz"}, ["no LR partner", "b.png", "data.hr_root"]),
    ({"a": (30, 7), "b": (30, 7)}, None, ["30", "7"]),
    ({"a": (32, 16), "b": (32, 8), "c": (32, 16)}, None, ["b.png", "must differ by exactly the scale 2"]),
], ids=["unmatched-names", "uninferable-scale", "one-pair-at-another-scale"])
def test_paired_folders(tmp_path, sizes, lr_names, named):
    assert_user_error(run_as_user(*paired(tmp_path, sizes, lr_names)), *named)


@pytest.mark.parametrize("override, named", [
    ("model.optim.lr=-0.001", ["model.optim.lr=-0.001", "positive"]),
    ("trainer.max_steps=abc", ["trainer.max_steps='abc'", "number"]),
    ("trainer.max_stepz=3", []),  # Hydra's own message (it names the key), exit code 2 as every user error
    ("experiment=no_such_experiment", []),
    ("+model.unknown_key=1", ["model:", "unknown_key"]),
], ids=["negative-lr", "max-steps-text", "typo-key", "unknown-experiment", "unknown-model-key"])
def test_config_values(tmp_path, override, named):
    result = run_as_user(*FIT, override, f"paths.output_dir={tmp_path / 'run'}")
    if named:
        assert_user_error(result, *named)
    else:  # Hydra's composition errors: several lines of Hydra's, but exit 2 and no traceback
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert override.split("=")[0].lstrip("+") in result.stderr or "no_such_experiment" in result.stderr


def test_debug_shows_the_traceback_for_bug_reports(tmp_path):
    result = run_as_user(*FIT, "model.optim.lr=-0.001", f"paths.output_dir={tmp_path / 'run'}", debug=True)
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert "error: model.optim.lr" in result.stderr


def test_a_name_with_a_path_separator_is_refused_before_anything_is_written(tmp_path):
    result = run_as_user(*FIT, "name=../../escaped", f"paths.log_dir={tmp_path / 'logs' / 'runs'}")
    assert_user_error(result, "name='../../escaped'", "paths.output_dir")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "logs").exists()


def test_a_checkpoint_of_another_method(tmp_path):
    other = tmp_path / "i2sb.ckpt"
    torch.save({"lit_diffsr_method": "lit_diffsr.methods.i2sb.I2SB", "state_dict": {}}, other)
    result = run_as_user("predict", "experiment=quickstart", *SMOKE, f"ckpt_path={other}",
                         f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, f"ckpt_path={other}", "I2SB", "ClassConditionalDiffusion", "experiment=")


def test_a_file_that_is_no_checkpoint(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 100)
    result = run_as_user("predict", "experiment=quickstart", *SMOKE, f"ckpt_path={junk}",
                         f"paths.output_dir={tmp_path / 'run'}")
    assert_user_error(result, "ckpt_path", "junk.ckpt", "not a readable PyTorch file")


class Payload:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_code_running_checkpoints_are_refused_through_the_cli(tmp_path):
    marker = tmp_path / "payload_ran"
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"lit_diffsr_method": "lit_diffsr.methods.classcond.ClassConditionalDiffusion",
                "extra": Payload(marker)}, pickled)
    other = tmp_path / "other.pkl"
    torch.save(Payload(marker), other)
    planted = tmp_path / "planted.ckpt"
    net = {"_target_": "torch.load", "f": str(other), "weights_only": False}
    torch.save({"lit_diffsr_method": "lit_diffsr.methods.classcond.ClassConditionalDiffusion",
                "hyper_parameters": {"net": net}, "state_dict": {}}, planted)

    result = run_as_user("predict", "experiment=quickstart", *SMOKE, f"ckpt_path={pickled}",
                         f"paths.output_dir={tmp_path / 'run1'}")
    assert_user_error(result, "ckpt_path: refused", "pickled.ckpt")
    result = run_as_user("validate", "experiment=ddrm_sr4x", "debug=fast", "num_threads=1",
                         f"model.prior_ckpt={planted}", f"paths.output_dir={tmp_path / 'run2'}")
    assert_user_error(result, "model.prior_ckpt: refused", "planted.ckpt", "'torch.load'")
    assert not marker.exists()
