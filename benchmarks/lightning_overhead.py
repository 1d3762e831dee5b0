"""Framework overhead: `trainer.fit` throughput against a bare PyTorch loop, same module and data.

The quickstart experiment's module (class-conditional DDPM, L_hybrid) and its demo DataModule (32x32 crops,
batch 32), built from `experiments/quickstart.yaml`. The bare loop calls `compute_losses`, backward, the
module's own AdamW + warm-up schedule; the Trainer runs `training_step` (the same plus logging) with
validation, checkpointing, progress bar and loggers off, and again with the EMA callback (Lightning's
and lit_diffsr's `ForeachEMA`). Each run times the steps after `--warmup` steps (start-up excluded);
candidates are interleaved round by round.

    python -m benchmarks.lightning_overhead [--steps 10] [--warmup 3] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging

from benchmarks.common import (
    compose_experiment,
    interleaved,
    load_average,
    markdown_table,
    median,
    spread,
    write_results,
)
from lit_diffsr.callbacks.ema import ForeachEMA


class StepWindow(L.Callback):
    """Wall time from the start of step `first` to the end of the last step."""

    def __init__(self, first: int) -> None:
        self.first, self.start, self.end = first, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.first:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def build(cfg):
    L.seed_everything(0, verbose=False)
    module = instantiate(cfg.model, _recursive_=False)
    datamodule = instantiate(cfg.data)
    return module, datamodule


def bare_loop(cfg, warmup: int, steps: int) -> Callable[[], float]:
    def run() -> float:
        module, datamodule = build(cfg)
        datamodule.setup("fit")
        optimizers = module.configure_optimizers()
        optimizer, schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
        module.train()
        start = 0.0
        for index, batch in enumerate(datamodule.train_dataloader()):
            if index == warmup:
                start = time.perf_counter()
            loss = module.compute_losses(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if index == warmup + steps - 1:
                return time.perf_counter() - start
        raise RuntimeError("the demo epoch is shorter than warmup + steps: lower --steps")

    return run


def trainer_fit(cfg, warmup: int, steps: int, ema: type | None) -> Callable[[], float]:
    def run() -> float:
        module, datamodule = build(cfg)
        window = StepWindow(warmup)
        callbacks = [window] + ([ema(decay=0.995)] if ema else [])
        trainer = L.Trainer(
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            callbacks=callbacks,
        )
        trainer.fit(module, datamodule=datamodule)
        return window.end - window.start

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    cfg = compose_experiment("quickstart", ["data.num_workers=0"])
    candidates = {
        "bare PyTorch loop": bare_loop(cfg, args.warmup, args.steps),
        "Trainer.fit": trainer_fit(cfg, args.warmup, args.steps, None),
        "Trainer.fit + EMAWeightAveraging": trainer_fit(cfg, args.warmup, args.steps, EMAWeightAveraging),
        "Trainer.fit + ForeachEMA": trainer_fit(cfg, args.warmup, args.steps, ForeachEMA),
    }
    times = interleaved(candidates, args.rounds, warmup=0)
    medians = {name: median(values) for name, values in times.items()}
    bare = medians["bare PyTorch loop"]
    batch = int(cfg.data.batch_size)
    rows = [
        [
            name,
            spread(values),
            f"{batch * args.steps / medians[name]:.1f}",
            f"{100 * (medians[name] / bare - 1):+.1f}%",
        ]
        for name, values in times.items()
    ]
    overhead = medians["Trainer.fit"] / bare - 1
    body = (
        f"quickstart module + demo DataModule, batch {batch}, {cfg.data.resolution}x{cfg.data.resolution}; "
        f"{args.steps} timed steps after {args.warmup}, {args.rounds} interleaved rounds.\n\n"
        + markdown_table(["run", f"median time of {args.steps} steps", "images/s", "vs bare loop"], rows)
        + f"\n\nTarget: Lightning overhead <= 5%. Measured {100 * overhead:+.1f}%: "
        + ("met." if overhead <= 0.05 else "MISSED.")
    )
    data = {"batch": batch, "steps": args.steps, "window_seconds": times, "overhead": overhead}
    write_results("lightning_overhead", "Lightning overhead", body, data, load_before)
    return data


if __name__ == "__main__":
    main()
