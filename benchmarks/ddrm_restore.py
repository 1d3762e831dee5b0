"""DDRM (Kawar et al. 2022) against the pseudo-inverse baseline H^+ y on the bundled photographs.

    python benchmarks/ddrm_restore.py --prior runs/quickstart/<run>/checkpoints/last.ckpt
    python benchmarks/ddrm_restore.py --train-steps 300    # first trains the quickstart prior (CLI `fit`)

Every ddrm_* experiment is composed as the CLI would (its degradation, sigma_y, 20 steps, eta 0.85, eta_b 1),
restores one 32x32 test crop per demo photograph (the centre of its 3x3 test grid; the quickstart prior is
32x32) with the photograph's class label, and is scored by RGB PSNR / SSIM on [0, 1] images (no shave), DDRM
(one sample) against H^+ y from the same noisy y. The table goes to stdout and to --out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch.utils.data import default_collate

from lit_diffsr.cli import available_experiments
from lit_diffsr.metrics.image import fidelity_scores

REPO = Path(__file__).resolve().parents[1]


def train_quickstart(steps: int, output_dir: Path) -> Path:
    """Train the quickstart prior for `steps` steps through the CLI; returns its last checkpoint."""
    command = [sys.executable, "-m", "lit_diffsr", "fit", "experiment=quickstart",
               f"trainer.max_steps={steps}", f"paths.output_dir={output_dir}", "callbacks.progress=null"]
    subprocess.run(command, cwd=REPO, check=True)
    return output_dir / "checkpoints" / "last.ckpt"


def restore_experiment(name: str, prior: Path, seed: int) -> dict[str, float]:
    """Compose experiment `name`, restore one centre test crop per photograph, return mean scores."""
    with initialize_config_module("lit_diffsr.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}", f"model.prior_ckpt={prior}"])
    datamodule = instantiate(cfg.data)
    method = instantiate(cfg.model, _recursive_=False)
    dataset = datamodule.dataset("test")
    crops = dataset.crops_per_side**2
    centre = crops // 2
    batch = default_collate([dataset[photo * crops + centre] for photo in range(len(dataset.classes))])
    start = time.perf_counter()
    output = method.sample(batch, seed=seed)
    seconds = time.perf_counter() - start
    target = batch["hr"]
    scores = {"sigma_y": method.sigma_y, "seconds": seconds}
    for label, images in (("ddrm", output.images), ("pinv", output.extras["condition"])):
        measured = fidelity_scores(images, target)
        scores.update({f"{name}_{label}": value.mean().item() for name, value in measured.items()})
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", type=Path, help="a 32x32 prior's checkpoint (e.g. quickstart's last.ckpt)")
    parser.add_argument("--train-steps", type=int, help="train the quickstart prior this many steps first")
    parser.add_argument("--train-dir", type=Path, default=REPO / "runs" / "ddrm_benchmark_prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ddrm.md")
    args = parser.parse_args(argv)
    if (args.prior is None) == (args.train_steps is None):
        parser.error("pass exactly one of --prior PATH or --train-steps N")
    torch.set_num_threads(args.threads)
    prior = args.prior if args.prior is not None else train_quickstart(args.train_steps, args.train_dir)
    if not prior.is_file():
        parser.error(f"--prior {prior}: no such checkpoint")
    trained_steps = torch.load(prior, map_location="cpu", weights_only=True, mmap=True).get("global_step")

    rows = ["| experiment | σ_y | PSNR DDRM | PSNR H⁺y | SSIM DDRM | SSIM H⁺y | seconds |",
            "|---|---|---|---|---|---|---|"]
    for name in (name for name in available_experiments() if name.startswith("ddrm_")):
        s = restore_experiment(name, prior, args.seed)
        rows.append(f"| {name} | {s['sigma_y']:g} | {s['psnr_ddrm']:.2f} | {s['psnr_pinv']:.2f} | "
                    f"{s['ssim_ddrm']:.3f} | {s['ssim_pinv']:.3f} | {s['seconds']:.1f} |")
        print(rows[-1], flush=True)
    header = [
        "# DDRM vs the pseudo-inverse on the bundled photographs",
        "",
        f"`python benchmarks/ddrm_restore.py --prior <quickstart last.ckpt>` (prior trained {trained_steps} "
        f"steps; seed {args.seed}; {torch.get_num_threads()} CPU thread(s)). One 32x32 centre test crop per "
        "demo photograph (12 images), class labels given to the prior, 20 DDRM steps, η = 0.85, η_b = 1, "
        "one sample per image; RGB PSNR (dB) / SSIM on [0, 1] images, no shave, outputs clamped to [-1, 1]. "
        "H⁺y is computed from the same noisy y.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([*header, *rows, ""]))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
