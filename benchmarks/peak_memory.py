"""Peak memory (RSS) of training and of sampling for each quickstart experiment, through the real CLI.

For every `experiments/*quickstart*.yaml`: `fit` for a few steps (no validation), then `predict` from its
last checkpoint, each in its own process; the peak resident set size is the kernel's max RSS of that
child (`os.wait4`), so nothing is sampled or missed. A run that fails is reported with its error.

    python -m benchmarks.peak_memory [--experiments quickstart ldm_quickstart ...] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import load_average, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str]) -> tuple[float, str]:
    """(peak RSS in MiB, '' or the last error line) of `python -m lit_diffsr ARGS`."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lit_diffsr", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    error = "" if process.returncode == 0 else (lines[-1] if lines else f"exit {process.returncode}")
    return usage.ru_maxrss / 1024, error  # Linux reports ru_maxrss in KiB


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", nargs="*", default=None, help="default: every *quickstart*")
    parser.add_argument("--steps", type=int, default=5, help="training steps per fit")
    args = parser.parse_args(argv)
    load_before = load_average()
    names = args.experiments or sorted(p.stem for p in (REPO / "experiments").glob("*quickstart*.yaml"))
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            common = [
                f"experiment={name}",
                f"paths.output_dir={root}/{name}",
                "num_threads=2",
                "callbacks.progress=null",
                "callbacks.lr_monitor=null",
                "logger=none",
            ]
            fit_rss, fit_error = run_cli(
                [
                    "fit",
                    *common,
                    f"trainer.max_steps={args.steps}",
                    "trainer.limit_val_batches=0",
                    "callbacks.sample_grid=null",
                ]
            )
            predict_rss, predict_error = run_cli(["predict", *common, "ckpt_path=last"])
            results[name] = {
                "fit_mib": fit_rss,
                "fit_error": fit_error,
                "predict_mib": predict_rss,
                "predict_error": predict_error,
            }
            rows.append(
                [
                    name,
                    f"{fit_rss:.0f}" + (f" (failed: {fit_error[:80]})" if fit_error else ""),
                    f"{predict_rss:.0f}" + (f" (failed: {predict_error[:80]})" if predict_error else ""),
                ]
            )
            print(name, results[name], flush=True)
    body = (
        f"Peak RSS (MiB) of `python -m lit_diffsr fit` ({args.steps} steps, no validation) and of `predict` "
        "from the run's last checkpoint, each experiment at its own config (CPU, 2 threads).\n\n"
        + markdown_table(["experiment", "training peak RSS (MiB)", "sampling peak RSS (MiB)"], rows)
    )
    write_results(
        "peak_memory", "Peak memory of the quickstart experiments", body, {"runs": results}, load_before
    )
    return results


if __name__ == "__main__":
    main()
