"""Every SR method of the framework trained at one budget, then scored x4 on Set5 / Set14 / BSD100.

    python -m benchmarks.sr_compare --data DIR [--minutes 4 | --steps 500] [--train DIR] [--out DIR]
        [--methods SR3 CDM ...] [--sets Set5 Set14 BSD100] [--crop 64] [--nfe 1 2 5 10 20]
        [--lpips-weights FILE] [--wandb-group NAME] [--threads 2]

1. Training (`python -m lit_diffsr fit`, one subprocess per run, the same data, crops and budget): SR3, a CDM
   cascade stage (x4, noise conditioning augmentation), I²SB, LDM-SR and latent I²SB (both on one
   autoencoder, trained first at the same budget and counted in theirs), and the unconditional prior that
   DDRM restores with. `--minutes` is wall-clock per run (Lightning's max_time), `--steps` optimizer steps.
   Data: 64 px crops of the bundled photographs, or of the HR images in `--train DIR`; LR by anti-aliased
   bicubic x4. Checkpoints every `--checkpoint-every` steps give the quality-vs-training-steps curve.
2. SR3's inference schedule is searched at each NFE on held-out crops of the training images (never the
   test sets) and saved beside its checkpoint (lit_diffsr.methods.sr3_schedule).
3. Evaluation on the centre `--crop` px of every image of each set in `--data DIR` (SelfExSR layout:
   DIR/<Set>/SelfExSR/image_SRF_4/*_{HR,LR}.png; the LR crop is the matching LR region): Y-PSNR and SSIM
   (4 px shaved), LPIPS (AlexNet, RGB), SR3's consistency (MSE of the bicubic-downsampled output against
   the LR), NFE and seconds per image. DDRM measures its own y = H x (bicubic H, sigma_y = 0) from the
   HR crop.
   Bicubic is PIL's upsampling of the whole LR image, cropped.
Writes OUT/sr_compare.md, OUT/sr_compare.json, OUT/quality_vs_nfe.png, OUT/quality_vs_steps.png and
OUT/crops.png (OUT: benchmarks/results/sr_compare; the runs go to --runs, default runs/sr_compare);
`--wandb-group` also logs them to W&B as one group.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import load_average, machine, markdown_table
from lit_diffsr.data.datasets import load_demo_photos
from lit_diffsr.diffusion import InferenceSchedule
from lit_diffsr.errors import ConfigError, exit_on_user_error
from lit_diffsr.methods.base import load_method
from lit_diffsr.methods.ddrm import DDRMRestoration
from lit_diffsr.methods.i2sb import I2SB
from lit_diffsr.methods.sr3_schedule import centre_crops, downsampled, read_crops, search_for, write_schedule
from lit_diffsr.methods.super_resolution import SR3
from lit_diffsr.metrics.image import psnr, sr_consistency, ssim
from lit_diffsr.safe_load import load_tensors

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "sr_compare"
SCALE = 4
SETS = ("Set5", "Set14", "BSD100")

# One small UNet for every pixel-space method (the quickstarts' size), one optimiser setting.
SMALL_NET = [
    "model.net.model_channels=32", "model.net.channel_mult=[1,2,2]", "model.net.num_res_blocks=1",
    "model.net.attention_resolutions=[16]", "model.net.num_heads=2", "model.net.dropout=0.0",
]  # fmt: skip
OPTIM = ["model.optim.lr=1e-3", "model.optim.warmup_steps=50"]
X4_DATA = [
    "data.batch_size=16",
    "data.degradation=[{type:downsample,scale:4,method:bicubic}]",
]
RESTORATION = ["trainer=cpu", "callbacks=restoration", *X4_DATA, *SMALL_NET, *OPTIM]
SR3_OVERRIDES = ("model=sr3", *RESTORATION, "model.sampler.name=ddim", "model.sampler.steps=ddim20")
AUTOENCODER = "autoencoder"  # the first stage of LDM-SR and latent I²SB: trained once, before them


@dataclass(frozen=True)
class Method:
    name: str
    overrides: tuple[str, ...]
    needs_autoencoder: bool = False
    is_prior: bool = False  # DDRM: the run trains the prior; restoration is training-free
    run: str = ""  # the training run's folder (default: from the name); methods may share a run
    searched_schedule: bool = True  # SR3: sample with the searched inference schedule

    @property
    def folder(self) -> str:
        return self.run or slug(self.name)


METHODS = (
    Method("SR3", SR3_OVERRIDES),
    # The same network sampled as published: DDIM on the respaced training schedule, from pure noise.
    Method("SR3 training schedule", SR3_OVERRIDES, run="sr3", searched_schedule=False),
    Method(
        "CDM stage",
        (
            "model=cascade_stage",
            *RESTORATION,
            "model.scale_factor=4",
            "model.net.use_aug_level=true",
            "model.augmentation.noise={schedule:cosine,num_timesteps:1000,max_level:500}",
            "model.sampler.steps=ddim25",
        ),
    ),  # fmt: skip
    Method("I2SB", ("experiment=i2sb_quickstart", *X4_DATA, *OPTIM)),
    Method("LDM-SR", ("experiment=ldm_quickstart", *X4_DATA, "model.tiling.tile_size=null"), True),
    Method("latent I2SB", ("experiment=latent_i2sb_quickstart", *X4_DATA), True),
    Method(
        "DDRM",
        (
            "experiment=quickstart",
            "model.num_classes=null",
            "model.label_dropout=0.0",
            "model.net.attention_resolutions=[16]",
            "model.sampler.name=ddim",
            "model.sampler.steps=ddim20",
        ),
        is_prior=True,
    ),  # fmt: skip
)
AUTOENCODER_RUN = Method(AUTOENCODER, ("experiment=autoencoder_quickstart",))
DDRM_OPERATOR = {"type": "sr_bicubic", "scale": SCALE}


# -- training --------------------------------------------------------------------------------------
def budget_overrides(minutes: float | None, steps: int | None) -> list[str]:
    if steps is not None:
        return [f"trainer.max_steps={steps}"]
    seconds = round(60 * minutes)
    return [
        "trainer.max_steps=-1",
        f"+trainer.max_time=00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}",
    ]


def data_overrides(train: Path | None) -> list[str]:
    if train is None:
        return ["data.demo_samples_per_epoch=1024"]
    return ["data.dataset=folder", f"+data.root={train}", "data.num_workers=0"]


def fit(method: Method, run: Path, args, autoencoder: Path | None) -> float:
    """Train one run through the CLI; returns its wall-clock seconds. A finished run is kept, not redone."""
    if (run / "checkpoints" / "last.ckpt").is_file():
        return json.loads((run / "train_seconds.json").read_text())["seconds"]
    command = [
        sys.executable, "-m", "lit_diffsr", "fit", *method.overrides, *data_overrides(args.train),
        *budget_overrides(args.minutes, args.steps), f"paths.output_dir={run}",
        f"data.resolution={args.crop}",
        f"num_threads={args.threads}", f"seed={args.seed}", "trainer.limit_val_batches=0",
        "callbacks.progress.plain=true",
        f"callbacks.checkpoint.every_n_train_steps={args.checkpoint_every}",
        "callbacks.checkpoint.save_top_k=-1",
    ]  # fmt: skip
    if method.name != AUTOENCODER:  # it trains without EMA
        command.append("callbacks.ema.decay=0.995")  # a few hundred steps: a short EMA horizon
    if autoencoder is not None:  # attention at the latent UNet's second level (sizes in output pixels)
        command += [
            f"model.autoencoder_ckpt={autoencoder}",
            f"model.net.attention_resolutions=[{args.crop // 2}]",
        ]
    run.mkdir(parents=True, exist_ok=True)
    print(f"[sr_compare] training {method.name}: load {load_average()}", flush=True)
    start = time.perf_counter()
    with open(run / "fit.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise ConfigError(f"training {method.name} failed (exit {done.returncode}); see {run / 'fit.log'}")
    (run / "train_seconds.json").write_text(json.dumps({"seconds": seconds, "command": command[2:]}))
    return seconds


def checkpoints_by_step(run: Path) -> dict[int, Path]:
    found = {}
    for path in (run / "checkpoints").glob("step*.ckpt"):
        match = re.fullmatch(r"step(\d+)", path.stem)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def trained_steps(run: Path) -> int:
    checkpoint = load_tensors(run / "checkpoints" / "last.ckpt", what="checkpoint", mmap=True)
    return int(checkpoint.get("global_step", 0))


# -- test data -------------------------------------------------------------------------------------
def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def centre_box(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left of the centre size x size box, on the LR grid (multiples of the scale)."""
    return (height - size) // 2 // SCALE * SCALE, (width - size) // 2 // SCALE * SCALE


def read_test_set(root: Path, name: str, crop: int) -> dict[str, torch.Tensor | list[str]]:
    """Centre crops of one SelfExSR test set: hr, the matching lr region, bicubic and the image names."""
    folder = root / name / "SelfExSR" / f"image_SRF_{SCALE}"
    lr_files = sorted(folder.glob("*_LR.png"))
    if not lr_files:
        raise ConfigError(
            f"no *_LR.png in {folder}: --data must hold {name}/SelfExSR/image_SRF_{SCALE}/ "
            "(python -m lit_diffsr.data.prepare srtest)"
        )
    hr, lr, bicubic = [], [], []
    for lr_file in lr_files:
        hr_image = Image.open(lr_file.with_name(lr_file.name.replace("_LR", "_HR")))
        lr_image = Image.open(lr_file)
        top, left = centre_box(hr_image.height, hr_image.width, crop)
        box = (left, top, left + crop, top + crop)
        hr.append(to_tensor(hr_image.crop(box)))
        lr.append(to_tensor(lr_image.crop(tuple(v // SCALE for v in box))))
        upsampled = lr_image.convert("RGB").resize(hr_image.size, Image.Resampling.BICUBIC)
        bicubic.append(to_tensor(upsampled.crop(box)))
    return {
        "hr": torch.stack(hr), "lr": torch.stack(lr), "bicubic": torch.stack(bicubic),
        "names": [f.stem.removesuffix("_LR") for f in lr_files],
    }  # fmt: skip


# -- sampling at a chosen NFE ---------------------------------------------------------------------------
def ddrm_for(prior_ckpt: Path) -> DDRMRestoration:
    return DDRMRestoration(prior=load_method(prior_ckpt), operator=DDRM_OPERATOR, sigma_y=0.0)


def sampling_call(model, method: Method, nfe: int, schedules: SR3Schedules) -> dict:
    """The `sample` arguments that make `model` use `nfe` network evaluations per image."""
    if isinstance(model, SR3) and method.searched_schedule:
        return {"options": {"schedule": schedules.for_nfe(model, nfe)}}
    if isinstance(model, (DDRMRestoration, I2SB)):
        return {"steps": nfe}
    try:  # DDIM's stride where one gives exactly `nfe` steps, else evenly spaced steps
        model.diffusion.respaced(f"ddim{nfe}")
        return {"steps": f"ddim{nfe}"}
    except ValueError:
        return {"steps": str(nfe)}


def nfe_of(model, call: dict) -> int:
    if "options" in call:
        return call["options"]["schedule"].num_steps
    if isinstance(model, DDRMRestoration):
        return len(model.skipped_timesteps(call["steps"]))
    if isinstance(model, I2SB):
        return int(call["steps"])
    return model.diffusion.respaced(call["steps"]).num_timesteps


@torch.no_grad()
def super_resolve(method, data: dict, call: dict, batch_size: int = 32) -> tuple[torch.Tensor, float]:
    """All crops of a set sampled with the `sample` arguments `call`, and the sampling seconds per image."""
    outputs, start = [], time.perf_counter()
    for first in range(0, len(data["hr"]), batch_size):
        part = slice(first, first + batch_size)
        batch = {"lr": data["lr"][part], "hr": data["hr"][part], "seed": 0}
        outputs.append(method.sample(batch, seed=0, **call).images.clamp(-1, 1).cpu())
    return torch.cat(outputs), (time.perf_counter() - start) / len(data["hr"])


def scores(sr: torch.Tensor, data: dict, lpips_model) -> dict[str, float]:
    quantised = ((sr + 1) * 127.5).round() / 127.5 - 1  # scored as the saved 8-bit image would be
    hr = data["hr"]
    out = {
        "psnr_y": psnr(quantised, hr, (-1.0, 1.0), y_channel=True, shave=SCALE).mean().item(),
        "ssim_y": ssim(quantised, hr, (-1.0, 1.0), y_channel=True, shave=SCALE).mean().item(),
        "consistency": sr_consistency(quantised, data["lr"], SCALE).mean().item(),
        "lpips": None,
    }
    if lpips_model is not None:
        out["lpips"] = lpips_model(quantised, hr).mean().item()
    return out


# -- SR3's schedule --------------------------------------------------------------------------------
def search_crops(args) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr, hr) of `--search-images` crops of the training images for SR3's schedule search (there is no
    held-out split of 12 photographs; the test sets are never used to choose anything)."""
    if args.train is not None:
        hr = read_crops(args.train, args.crop, args.search_images)
    else:
        photos = load_demo_photos(2 * args.crop)[: args.search_images]
        hr = centre_crops(photos, args.crop, "the bundled photographs")
    return downsampled(hr, SCALE), hr


class SR3Schedules:
    """SR3's inference schedule per NFE, searched once per NFE on the last checkpoint (and reused for the
    earlier checkpoints of the training curve), with every search's table."""

    def __init__(self, crops: tuple[torch.Tensor, torch.Tensor] | None):
        self.crops, self.best, self.tables = crops, {}, {}

    def for_nfe(self, method: SR3, nfe: int) -> InferenceSchedule:
        if nfe not in self.best:
            self.best[nfe], self.tables[nfe] = search_for(method, *self.crops, num_steps=nfe)
        return self.best[nfe]


@torch.no_grad()
def sr3_estimates_by_level(model: SR3, data: dict, levels=(0.99, 0.9, 0.7, 0.5, 0.3, 0.1, 0.01)) -> dict:
    """Y-PSNR of SR3's one-step estimate x0 = (y - sqrt(1 - g) eps) / sqrt(g) (SR3 eq. 5 solved for y_0)
    from the HR crops noised to each level sqrt(g): where the net is better than bicubic, and where not."""
    hr, cond = data["hr"], model.condition(data["lr"])
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    estimates = {}
    for level in levels:
        noisy = level * hr + (1 - level**2) ** 0.5 * noise
        eps = model.net(noisy, torch.full((len(hr),), model.noise_level_scale * level), cond=cond)
        x0 = ((noisy - (1 - level**2) ** 0.5 * eps) / level).clamp(-1, 1)
        estimates[level] = psnr(x0, hr, (-1.0, 1.0), y_channel=True, shave=SCALE).mean().item()
    return estimates


# -- the run ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out, runs = Path(args.out), Path(args.runs).resolve()
    test_sets = {name: read_test_set(Path(args.data), name, args.crop) for name in args.sets}
    methods = [m for m in METHODS if m.name in args.methods]
    loads, train_seconds = [load_average()], {}
    autoencoder_ckpt = None
    if any(m.needs_autoencoder for m in methods):
        train_seconds[AUTOENCODER] = fit(AUTOENCODER_RUN, runs / AUTOENCODER, args, None)
        autoencoder_ckpt = runs / AUTOENCODER / "checkpoints" / "last.ckpt"
    for method in methods:
        ae = autoencoder_ckpt if method.needs_autoencoder else None
        train_seconds[method.name] = fit(method, runs / method.folder, args, ae)
        loads.append(load_average())
    lpips_model = lpips_or_none(args.lpips_weights)
    schedules = SR3Schedules(search_crops(args) if "SR3" in args.methods else None)
    rows, curves, steps_curves, crops, sr3_levels = {}, {}, {}, {}, {}
    bicubic_rows = {name: scores(data["bicubic"], data, lpips_model) for name, data in test_sets.items()}
    set5 = test_sets[args.sets[0]]
    for method in methods:
        run = runs / method.folder
        last = run / "checkpoints" / "last.ckpt"
        model = build(method, last)
        call = sampling_call(model, method, args.default_nfe, schedules)
        if isinstance(model, SR3) and method.searched_schedule:
            write_schedule(last, call["options"]["schedule"], schedules.tables[args.default_nfe])
            sr3_levels = sr3_estimates_by_level(model, set5)
        rows[method.name] = {}
        for name, data in test_sets.items():
            sr, seconds = super_resolve(model, data, call)
            rows[method.name][name] = {**scores(sr, data, lpips_model), "nfe": nfe_of(model, call),
                                       "seconds_per_image": seconds}  # fmt: skip
            if name == args.sets[0]:
                crops[method.name] = sr
        curves[method.name] = nfe_curve(method, last, set5, args, schedules)
        steps_curves[method.name] = steps_curve(method, run, set5, args, schedules)
        loads.append(load_average())
        print(f"[sr_compare] {method.name}: {rows[method.name]}", flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "budget": {"minutes": args.minutes, "steps": args.steps}, "crop": args.crop,
        "train": str(args.train or "bundled photographs"), "load_averages": loads,
        "train_seconds": train_seconds,
        "trained_steps": {m.name: trained_steps(runs / m.folder) for m in methods},
        "images": {name: len(data["hr"]) for name, data in test_sets.items()},
        "bicubic": bicubic_rows, "methods": rows, "quality_vs_nfe": curves, "quality_vs_steps": steps_curves,
        "sr3_x0_estimate_psnr_by_level": sr3_levels,
        "sr3_schedule_search": {
            str(nfe): [{**s.to_dict(), "psnr_y": v} for s, v in table]
            for nfe, table in schedules.tables.items()
        },
    }  # fmt: skip
    write_outputs(out, result, set5, crops, args)


def build(method: Method, ckpt: Path):
    """The trained method from its checkpoint (the SR prior of DDRM wrapped in DDRM)."""
    return ddrm_for(ckpt) if method.is_prior else load_method(ckpt).eval()


def nfe_curve(method: Method, ckpt: Path, data: dict, args, schedules: SR3Schedules) -> dict[int, float]:
    model, curve = build(method, ckpt), {}
    for nfe in args.nfe:
        call = sampling_call(model, method, nfe, schedules)
        curve[nfe] = scores(super_resolve(model, data, call)[0], data, None)["psnr_y"]
    return curve


def steps_curve(method: Method, run: Path, data: dict, args, schedules: SR3Schedules) -> dict[int, float]:
    """Y-PSNR on the first set at every saved step, at the default NFE."""
    curve = {}
    for step, ckpt in checkpoints_by_step(run).items():
        model = build(method, ckpt)
        call = sampling_call(model, method, args.default_nfe, schedules)
        curve[step] = scores(super_resolve(model, data, call)[0], data, None)["psnr_y"]
    return curve


def lpips_or_none(weights: str | None):
    from lit_diffsr.metrics.perceptual import load_lpips

    try:
        return load_lpips("alex", weights)
    except ConfigError as error:
        print(f"[sr_compare] LPIPS left out: {str(error).splitlines()[0]}", flush=True)
        return None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# -- outputs ---------------------------------------------------------------------------------------
def fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_outputs(out: Path, result: dict, set5: dict, crops: dict, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sr_compare.json").write_text(json.dumps(result, indent=1) + "\n")
    header = ["method", "train steps", "Y-PSNR", "SSIM", "LPIPS", "consistency", "NFE", "s / image"]
    lines = [
        "# SR methods at one budget, x4", "",
        f"{result['date']}; {result['machine']}; budget per run: "
        + (f"{args.steps} steps" if args.steps else f"{args.minutes:g} min wall-clock")
        + f"; training data: {result['train']}; centre {args.crop}x{args.crop} crops; "
        f"load averages (1 / 5 / 15 min) during the run: {', '.join(result['load_averages'])}", "",
    ]  # fmt: skip
    for name in args.sets:
        table = [["bicubic", "-", *cells(result["bicubic"][name]), "-", "-"]]
        for method, by_set in result["methods"].items():
            row = by_set[name]
            table.append([method, result["trained_steps"][method], *cells(row), row["nfe"],
                          f"{row['seconds_per_image']:.3f}"])  # fmt: skip
        lines += [f"## {name} ({result['images'][name]} centre crops)", "",
                  markdown_table(header, table), ""]  # fmt: skip
    lines += notes(result, args)
    lines += ["Plots: quality_vs_nfe.png, quality_vs_steps.png; crops: crops.png (bicubic, methods, HR)."]
    (out / "sr_compare.md").write_text("\n".join(lines) + "\n")
    plot(out, result, args)
    save_crops(out / "crops.png", set5, crops)
    if args.wandb_group:
        log_to_wandb(out, result, args.wandb_group)
    print("\n".join(lines))


def notes(result: dict, args) -> list[str]:
    """The best NFE of each method, SR3's chosen schedule and its one-step estimates by noise level."""
    first = args.sets[0]
    best = [
        f"{m} {max(c.values()):.2f} dB at NFE {max(c, key=c.get)}"
        for m, c in result["quality_vs_nfe"].items()
    ]
    lines = [f"Best {first} Y-PSNR over NFE {args.nfe}: " + "; ".join(best) + ".", ""]
    table = result["sr3_schedule_search"].get(str(args.default_nfe))
    if table:

        def describe(entry: dict) -> str:
            schedule = InferenceSchedule.from_dict({k: v for k, v in entry.items() if k != "psnr_y"})
            return (
                f"betas {schedule.beta_start:g}..{schedule.beta_end:g}, start {schedule.start}, "
                f"sqrt(gamma_N) {schedule.end_level:.3f}: {entry['psnr_y']:.2f} dB"
            )

        chosen = max(table, key=lambda entry: entry["psnr_y"])
        from_noise = max((e for e in table if e["start"] == "noise"), key=lambda entry: entry["psnr_y"])
        lines += [
            f"SR3's inference schedule at NFE {args.default_nfe}, searched on crops of the training images: "
            f"{describe(chosen)} (best start from pure noise: {describe(from_noise)}).",
            "SR3's one-step x0 estimate on noised HR crops of "
            + first
            + ", Y-PSNR by sqrt(gamma): "
            + ", ".join(f"{float(k):g}: {v:.2f}" for k, v in result["sr3_x0_estimate_psnr_by_level"].items())
            + f" dB (bicubic {result['bicubic'][first]['psnr_y']:.2f}).",
            "",
        ]
    return lines


def cells(row: dict) -> list[str]:
    return [fmt(row["psnr_y"], 2), fmt(row["ssim_y"], 4), fmt(row["lpips"], 3), fmt(row["consistency"], 5)]


def plot(out: Path, result: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bicubic = result["bicubic"][args.sets[0]]["psnr_y"]
    for key, xlabel, filename, log_x in (
        ("quality_vs_nfe", "network evaluations per image (NFE)", "quality_vs_nfe.png", True),
        ("quality_vs_steps", "training steps", "quality_vs_steps.png", False),
    ):
        figure, axis = plt.subplots(figsize=(6, 4))
        for method, curve in result[key].items():
            if curve:
                xs = [int(x) for x in curve]
                axis.plot(xs, list(curve.values()), marker="o", label=method)
        axis.axhline(bicubic, color="black", linestyle="--", label="bicubic")
        axis.set(xlabel=xlabel, ylabel=f"Y-PSNR on {args.sets[0]} (dB)")
        if log_x:
            axis.set_xscale("log")
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out / filename, dpi=90)
        plt.close(figure)


def save_crops(path: Path, data: dict, crops: dict, count: int = 3, size: int = 48) -> None:
    """Rows: `count` images; columns: bicubic, every method, HR; the centre size x size of each crop."""
    from torchvision.utils import save_image

    columns = [data["bicubic"], *crops.values(), data["hr"]]
    count, size = min(count, len(data["hr"])), min(size, data["hr"].shape[-1])
    top = (data["hr"].shape[-1] - size) // 2
    tiles = [column[i, :, top : top + size, top : top + size] for i in range(count) for column in columns]
    save_image((torch.stack(tiles) + 1) / 2, path, nrow=len(columns), padding=2, pad_value=1.0)
    print(f"[sr_compare] crops: columns bicubic | {' | '.join(crops)} | HR", flush=True)


def log_to_wandb(out: Path, result: dict, group: str) -> None:
    import wandb

    for method, by_set in result["methods"].items():
        run = wandb.init(project="lit_diffsr", group=group, name=method, config=result["budget"], reinit=True)
        run.log({f"{name}/{key}": value for name, row in by_set.items() for key, value in row.items()})
        run.finish()
    run = wandb.init(project="lit_diffsr", group=group, name="summary", reinit=True)
    run.log(
        {
            name: wandb.Image(str(out / name))
            for name in ("quality_vs_nfe.png", "quality_vs_steps.png", "crops.png")
        }
    )
    run.finish()


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=4.0, help="wall-clock training minutes per run")
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--data", required=True, help="holds Set5/, Set14/, BSD100/ (SelfExSR)")
    parser.add_argument("--train", type=Path, default=None, help="HR training images (default: bundled)")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--methods", nargs="+", default=[m.name for m in METHODS])
    parser.add_argument("--crop", type=int, default=64, help="HR crop size trained and scored (px)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 5, 10, 20], help="NFE of the NFE plot")
    parser.add_argument("--default-nfe", type=int, default=20, help="NFE of the table")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between curve points")
    parser.add_argument("--search-images", type=int, default=8, help="crops for SR3's schedule search")
    parser.add_argument("--lpips-weights", default=None, help="LPIPS AlexNet weights (default: the cache)")
    parser.add_argument("--wandb-group", default=None, help="also log to W&B as this group")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--runs", default=str(REPO / "runs" / "sr_compare"), help="training runs go here")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps is not None:
        args.minutes = None
    unknown = set(args.methods) - {m.name for m in METHODS}
    if unknown:
        raise ConfigError(f"--methods: unknown {sorted(unknown)}; choose from {[m.name for m in METHODS]}")
    if args.crop % SCALE:
        raise ConfigError(f"--crop {args.crop} must be a multiple of {SCALE}")
    return args


if __name__ == "__main__":
    with exit_on_user_error():
        main()
