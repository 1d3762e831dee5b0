"""Shared helpers of the benchmarks: interleaved timing, medians, machine state, results files.

The machine is shared and noisy, so peers are always timed in the same run, interleaved
(A, B, C, A, B, C, ...): a load spike then hits every candidate alike, and the medians and their
ratios stay comparable even when the absolute numbers drift. Each result records the load average.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def compose_experiment(name: str, overrides: list[str] | None = None):
    """The composed Hydra config of `experiments/NAME.yaml` (as `python -m lit_diffsr fit` builds it)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("lit_diffsr.conf", version_base="1.3"):
        return compose("config", overrides=[f"experiment={name}", "command=fit", *(overrides or [])])


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, {os.cpu_count()} cores)"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({cpu_model()})"
    return (
        f"{device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"python {platform.python_version()}"
    )


def interleaved(
    candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, synchronize: bool = False
) -> dict[str, list[float]]:
    """Seconds per call of each candidate over `rounds` interleaved rounds, after `warmup` untimed ones.

    A candidate that returns a float reports its own timed window (e.g. steps after its start-up)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + rounds):
        for name, run in candidates.items():
            start = time.perf_counter()
            result = run()
            if synchronize:
                torch.cuda.synchronize()
            if round_index >= warmup:
                times[name].append(result if isinstance(result, float) else time.perf_counter() - start)
    return times


def gemm_flops_per_second(
    device: str = "cpu", size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """Dense matmul throughput in `dtype` (FLOP/s, best of `repeats`): the ceiling of a conv net's step.

    Convolutions and attention are matmuls underneath; a step that spends its time in them cannot run its
    FLOPs faster than a large square GEMM on the same threads."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up the BLAS
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """Median and the interquartile range in percent of it, e.g. '0.210 s (IQR 4%)'."""
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{quartiles[1]:.4g} s (IQR {100 * (quartiles[2] - quartiles[0]) / quartiles[1]:.0f}%)"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, body: str, data: dict, load_before: str) -> Path:
    """Write results/NAME.md (human) and results/NAME.json (numbers), stamped with date, machine, load."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (
        f"# {title}\n\n{stamp}; {machine()}\nload average before: {load_before}; after: "
        f"{load_average()}\n\n{body.strip()}\n"
    )
    (RESULTS_DIR / f"{name}.md").write_text(text)
    (RESULTS_DIR / f"{name}.json").write_text(
        json.dumps(
            {
                "date": stamp,
                "machine": machine(),
                "load_before": load_before,
                "load_after": load_average(),
                **data,
            },
            indent=2,
        )
    )
    print(text)
    return RESULTS_DIR / f"{name}.md"
