"""Run every benchmark of this folder in turn (one at a time: they time the machine) and list the results.

    python -m benchmarks.run_all [--only unet_step sampler_accuracy ...] [--skip peak_memory ...]

Each benchmark also runs alone (`python -m benchmarks.NAME --help`); results land in benchmarks/results/
(NAME.md for people, NAME.json for numbers), summarised in benchmarks/README.md. gpu_unet runs only where
CUDA is available.
"""

from __future__ import annotations

import argparse
import importlib
import traceback

import torch

from benchmarks.common import RESULTS_DIR

# Cheap and exact first, then the timed ones. Each runs with its defaults, except as listed in RUNS.
BENCHMARKS = [
    "sampler_accuracy",
    "unet_step",
    "cpu_kernels",
    "ema_update",
    "lightning_overhead",
    "data_pipeline",
    "data_shards",
    "peak_memory",
    "gpu_unet",
]

# The runs the README's tables quote.
RUNS = {
    "unet_step": [
        ["--channels-last", "--profile"],
        ["--bf16", "--channels-last", "--compile", "--profile", "--name", "unet_step_bf16"],
    ],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=BENCHMARKS, choices=BENCHMARKS)
    parser.add_argument("--skip", nargs="*", default=[], choices=BENCHMARKS)
    args = parser.parse_args(argv)
    failed = []
    for name in args.only:
        if name in args.skip or (name == "gpu_unet" and not torch.cuda.is_available()):
            print(f"== {name}: skipped", flush=True)
            continue
        print(f"== {name}", flush=True)
        try:
            for arguments in RUNS.get(name, [[]]):
                importlib.import_module(f"benchmarks.{name}").main(arguments)
        except Exception:  # one failing benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
    print(f"results in {RESULTS_DIR}; failed: {', '.join(failed) or 'none'}")


if __name__ == "__main__":
    main()
