"""`python -m lit_diffsr plot RUN_DIR... [out=FILE.png] [metrics=train/loss,val/loss,...]`: the loss and
metric curves of one or several runs in one PNG, and a summary table on stdout; the local counterpart of a
W&B comparison.

A RUN_DIR is a fit's run directory (its `metrics.csv`) or any folder above several (a sweep's
`runs/multirun/NAME/TIME`, or `runs/NAME`): every fit's `metrics.csv` below it is a run, labelled by its
path below RUN_DIR (a sweep job's folder names its overrides). The CSV logs of validate / test / predict
(under `samples/`) are not runs of their own.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from lit_diffsr.arguments import key_values
from lit_diffsr.errors import ConfigError, exit_on_user_error

# Curves drawn by default: the training loss and every validation metric a run logged.
DEFAULT_PREFIXES = ("train/loss", "val/")
MAX_RUNS_IN_LEGEND = 12

History = dict[str, list[tuple[int, float]]]  # metric -> [(step, value)]


def find_runs(directories: Sequence[str | Path]) -> dict[str, Path]:
    """{label: metrics.csv} of the fits in or below `directories`."""
    runs: dict[str, Path] = {}
    for directory in map(Path, directories):
        if not directory.is_dir():
            raise ConfigError(f"plot: {directory} is not a directory: give run directories (runs/NAME/TIME)")
        if (directory / "metrics.csv").is_file():
            runs[directory.name] = directory / "metrics.csv"
            continue
        found = directory.rglob("metrics.csv")
        for path in sorted(p for p in found if "samples" not in p.relative_to(directory).parts):
            label = str(path.parent.relative_to(directory))
            runs[label if len(directories) == 1 else f"{directory.name}/{label}"] = path
    if not runs:
        raise ConfigError(f"plot: no metrics.csv in or below {', '.join(map(str, directories))}: run `fit` "
                          "with the CSV logger (logger=csv, the default, or logger=wandb, which keeps it)")
    return runs


def read_history(path: Path) -> History:
    """The metrics of a `metrics.csv` by name, as (step, value) pairs in step order."""
    history: History = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for name, value in row.items():
                if name not in ("step", "epoch") and value not in ("", None):
                    history.setdefault(name, []).append((step, float(value)))
    return {name: sorted(points) for name, points in history.items()}


def chosen_metrics(histories: dict[str, History], requested: Sequence[str] | None) -> list[str]:
    names = sorted({name for history in histories.values() for name in history})
    if requested:
        missing = [name for name in requested if name not in names]
        if missing:
            raise ConfigError(f"plot: metrics={','.join(missing)} logged by no run; logged: "
                              f"{', '.join(names)}")
        return list(requested)
    return [name for name in names if name.startswith(DEFAULT_PREFIXES)]


def summary_rows(histories: dict[str, History], metrics: Sequence[str]) -> list[list[str]]:
    """Per run: its last step and each metric's last value (the training loss averaged over the last tenth
    of its points, since one batch's loss is noisy)."""
    rows = []
    for label, history in histories.items():
        last_step = max((points[-1][0] for points in history.values() if points), default=0)
        cells = [label, str(last_step)]
        for name in metrics:
            points = history.get(name, [])
            if not points:
                cells.append("-")
                continue
            tail = points[-max(1, len(points) // 10):] if name.startswith("train/") else points[-1:]
            cells.append(f"{sum(value for _, value in tail) / len(tail):.4g}")
        rows.append(cells)
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose columns line up in a terminal."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
             for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def draw(histories: dict[str, History], metrics: Sequence[str], out: Path) -> Path:
    """One panel per metric (x: training step), one line per run; written to `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, metrics, strict=False):
        for label, history in histories.items():
            points = history.get(name)
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, label=label, marker="o" if len(points) <= 20 else None, markersize=3)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=8)
        if name.endswith("loss") and all(v > 0 for h in histories.values() for _, v in h.get(name, [])):
            axis.set_yscale("log")  # losses fall by orders of magnitude
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(metrics):]:
        axis.axis("off")
    if 1 < len(histories) <= MAX_RUNS_IN_LEGEND:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8,
                      frameon=False)
        figure.tight_layout(rect=(0, 0.06 * math.ceil(len(labels) / 3), 1, 1))
    else:
        figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def plot_runs(directories: Sequence[str | Path], out: str | Path | None = None,
              metrics: Sequence[str] | None = None) -> tuple[Path, str]:
    """Draw the curves of the runs in `directories` into `out` (default `<first directory>/curves.png`);
    returns the PNG's path and the summary table."""
    runs = find_runs(directories)
    histories = {label: read_history(path) for label, path in runs.items()}
    names = chosen_metrics(histories, metrics)
    if not names:
        raise ConfigError("plot: the runs logged no train/loss or val/ metrics yet; choose with metrics=...")
    path = draw(histories, names, Path(out) if out else Path(directories[0]) / "curves.png")
    table = format_table(["run", "last step", *names], summary_rows(histories, names))
    return path, table


USAGE = "RUN_DIR... [out=FILE.png] [metrics=NAME,NAME]"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: `plot RUN_DIR... [out=FILE.png] [metrics=NAME,NAME]`."""
    with exit_on_user_error():
        args = list(sys.argv[1:] if argv is None else argv)
        options, directories = key_values("plot", args, {"out", "metrics"}, USAGE, plain=True)
        if not directories:
            raise ConfigError(f"plot: no run directory; usage: plot {USAGE}")
        metrics = [name for name in options.get("metrics", "").split(",") if name] or None
        path, table = plot_runs(directories, options.get("out"), metrics)
    print(table)
    print(f"\nCurves: {path.resolve()}")
