"""SR3's searched inference schedule: the search over a trained model, and the file beside its checkpoint.

The search (WaveGrad §4; SR3 §4) samples a few held-out (lr, hr) pairs with every candidate
`InferenceSchedule` at a fixed NFE and keeps the one with the best Y-PSNR. The winner is written as
`<checkpoint stem>.schedule.json` next to the checkpoint; `use_saved_schedule` gives it to the method that
validate / test / predict (`ckpt_path=...`, in `train.run_command`) or `load_method` load from it.

    python -m lit_diffsr.methods.sr3_schedule CKPT --hr DIR [--steps 20] [--crop 64] [--images 8]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lit_diffsr.arguments import ArgumentParser
from lit_diffsr.data.degradations import downsample, from_uint8
from lit_diffsr.data.io import find_images, load_rgb
from lit_diffsr.diffusion import InferenceSchedule, candidate_schedules, search_schedule
from lit_diffsr.errors import ConfigError, exit_on_user_error
from lit_diffsr.methods.base import DiffusionMethod, load_method
from lit_diffsr.methods.super_resolution import SR3
from lit_diffsr.metrics.image import psnr

log = logging.getLogger("lit_diffsr")

# The grid searched at a given NFE: end points from nearly clean to pure noise (see candidate_schedules).
BETA_STARTS = (1e-6, 1e-4, 1e-3)
BETA_ENDS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 0.6)


def schedule_path(ckpt_path: str | Path) -> Path:
    return Path(ckpt_path).with_suffix(".schedule.json")


def read_schedule(ckpt_path: str | Path) -> InferenceSchedule | None:
    """The schedule saved beside `ckpt_path`, or None when there is none (the training schedule is used)."""
    path = schedule_path(ckpt_path)
    if not path.is_file():
        return None
    try:
        schedule = InferenceSchedule.from_dict(json.loads(path.read_text())["inference_schedule"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{path}: not a valid SR3 inference schedule ({error}); delete it or rerun "
            "python -m lit_diffsr.methods.sr3_schedule"
        ) from None
    log.info("SR3 samples with the inference schedule of %s: %s", path, schedule)
    return schedule


def write_schedule(
    ckpt_path: str | Path, schedule: InferenceSchedule, scored: Sequence[tuple[InferenceSchedule, float]] = ()
) -> Path:
    """Save `schedule` (and the search's table) beside the checkpoint; returns the file written."""
    path = schedule_path(ckpt_path)
    table = [{**candidate.to_dict(), "psnr_y": score} for candidate, score in scored]
    path.write_text(json.dumps({"inference_schedule": schedule.to_dict(), "search": table}, indent=1) + "\n")
    return path


def use_saved_schedule(method: DiffusionMethod, ckpt_path: str | Path) -> DiffusionMethod:
    """Give an SR3 loaded from `ckpt_path` the schedule saved beside it (if any); other methods pass."""
    if isinstance(method, SR3):
        method.inference_schedule = read_schedule(ckpt_path)
    return method


@torch.no_grad()
def schedule_psnr(
    method: SR3, lr: torch.Tensor, hr: torch.Tensor, schedule: InferenceSchedule, seed: int = 0
) -> float:
    """Mean Y-PSNR (shave = scale) of `method` sampling the pairs with `schedule`."""
    sample = method.sample({"lr": lr}, seed=seed, options={"schedule": schedule}).images.cpu()
    return psnr(sample.clamp(-1, 1), hr, (-1.0, 1.0), y_channel=True, shave=method.scale).mean().item()


def search_for(
    method: SR3,
    lr: torch.Tensor,
    hr: torch.Tensor,
    num_steps: int,
    beta_starts: Sequence[float] = BETA_STARTS,
    beta_ends: Sequence[float] = BETA_ENDS,
    starts: Sequence[str] = ("noise", "condition"),
    seed: int = 0,
) -> tuple[InferenceSchedule, list[tuple[InferenceSchedule, float]]]:
    """The best schedule of `num_steps` steps for `method` on the held-out pairs (lr, hr), and the table."""
    candidates = candidate_schedules(num_steps, beta_starts, beta_ends, starts)
    return search_schedule(candidates, lambda schedule: schedule_psnr(method, lr, hr, schedule, seed))


def read_crops(folder: str | Path, crop: int, count: int | None = None) -> torch.Tensor:
    """(N, 3, crop, crop) centre crops in [-1, 1] of the first `count` images of `folder` (sorted names)."""
    files = find_images(folder, recursive=False)[:count]
    if not files:
        raise ConfigError(f"no images in {folder}; pass a folder of HR images")
    return centre_crops([load_rgb(file) for file in files], crop, str(folder))


def centre_crops(images: Sequence[np.ndarray], crop: int, where: str) -> torch.Tensor:
    """(N, 3, crop, crop) in [-1, 1]: the centre of each (H, W, 3) uint8 image."""
    crops = []
    for image in images:
        top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        if min(top, left) < 0:
            raise ConfigError(f"an image of {where} is smaller than {crop}x{crop}; use a smaller crop")
        crops.append(to_chw(from_uint8(image[top : top + crop, left : left + crop])))
    return torch.stack(crops)


def downsampled(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR of each HR image: anti-aliased bicubic, as the training data's degradation."""
    return torch.stack([to_chw(downsample(to_hwc(image), scale)) for image in hr])


def main(argv: Sequence[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("checkpoint", help="an SR3 checkpoint written by `lit_diffsr fit`")
    parser.add_argument("--hr", required=True, help="folder of held-out HR images (not the test set)")
    parser.add_argument("--steps", type=int, default=20, help="NFE of the searched schedules")
    parser.add_argument("--crop", type=int, default=64, help="centre crop, a multiple of the scale")
    parser.add_argument("--images", type=int, default=8, help="how many images of --hr to score")
    with exit_on_user_error():
        args = parser.parse_args(argv)  # a wrong argument is one error line, as in every command
        method = load_method(args.checkpoint).eval()
        if not isinstance(method, SR3):
            raise ConfigError(f"{args.checkpoint} holds a {type(method).__name__}; the search is for SR3")
        hr = read_crops(args.hr, args.crop, args.images)
        lr = downsampled(hr, method.scale)
        best, scored = search_for(method, lr, hr, args.steps)
        for candidate, score in scored:
            print(f"{score:7.2f} dB  {candidate}")
        print(f"chosen: {best}\nwritten: {write_schedule(args.checkpoint, best, scored)}")


def to_hwc(image: torch.Tensor):
    return image.permute(1, 2, 0).numpy()


def to_chw(image) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)


if __name__ == "__main__":
    main()
