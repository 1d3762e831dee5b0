"""Choose a cascade stage's conditioning-augmentation level s after training (Ho et al. 2022, CDM §4.2).

Training amortises over s; the level used at sampling is searched afterwards on a validation set. The
search is a `validate` multirun over `model.augmentation.sampling_level` with an image-metric callback,
then this report, which reads every job's level and metric and prints the table and the best level:

    python -m lit_diffsr validate -m experiment=cdm_32_64 ckpt_path=RUN/checkpoints/last.ckpt \\
        model.augmentation.sampling_level=0,50,100,250,500 hydra.sweep.dir=runs/aug_search \\
        ++callbacks.image_metrics._target_=lit_diffsr.callbacks.metrics.ImageMetrics \\
        ++callbacks.image_metrics.scale=2
    python -m lit_diffsr.pipelines.augmentation_search runs/aug_search --metric val/psnr_y

Use `--lower-is-better` for metrics such as val/lpips or FID.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import yaml

from lit_diffsr.errors import ConfigError


def last_value(metrics_csv: Path, metric: str) -> float | None:
    """The last logged value of `metric` in a run's metrics.csv, None when it was never logged."""
    with open(metrics_csv, newline="") as file:
        values = [row[metric] for row in csv.DictReader(file) if row.get(metric) not in (None, "")]
    return float(values[-1]) if values else None


def collect(sweep_dir: str | Path, metric: str) -> dict[int, float]:
    """{sampling level s: metric} over the jobs of a sweep: each `metrics.csv` below `sweep_dir` with its
    config beside it (validate's `samples/validate/config.yaml`) or in the `.hydra/` of its folder."""
    results = {}
    for metrics_path in sorted(Path(sweep_dir).rglob("metrics.csv")):
        folder = metrics_path.parent
        config_path = next((path for path in (folder / "config.yaml", folder / ".hydra" / "config.yaml")
                            if path.is_file()), None)
        if config_path is None:
            continue
        config = yaml.safe_load(config_path.read_text())
        level = config.get("model", {}).get("augmentation", {}).get("sampling_level")
        value = last_value(metrics_path, metric)
        if level is not None and value is not None:
            results[int(level)] = value
    if not results:
        raise ConfigError(
            f"no job under {sweep_dir} logged {metric!r} with a model.augmentation.sampling_level: run the "
            "validate sweep of this module's docstring first (with an image-metric callback)"
        )
    return results


def best_level(results: dict[int, float], higher_is_better: bool = True) -> int:
    """The level with the best metric (ties: the smallest level, the weakest augmentation)."""
    sign = -1.0 if higher_is_better else 1.0
    return min(results, key=lambda level: (sign * results[level], level))


def report(results: dict[int, float], metric: str, higher_is_better: bool = True) -> str:
    best = best_level(results, higher_is_better)
    lines = [f"{'level s':>8}  {metric}"]
    lines += [
        f"{level:>8}  {value:.4f}{'  <- best' * (level == best)}" for level, value in sorted(results.items())
    ]
    lines.append(
        f"best sampling level: model.augmentation.sampling_level={best} (pipeline: aug_level: {best})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", help="the validate multirun's hydra.sweep.dir")
    parser.add_argument("--metric", default="val/psnr_y", help="column of metrics.csv (default val/psnr_y)")
    parser.add_argument("--lower-is-better", action="store_true", help="for LPIPS, FID, losses")
    args = parser.parse_args(argv)
    results = collect(args.sweep_dir, args.metric)
    print(report(results, args.metric, not args.lower_is_better))
    return best_level(results, not args.lower_is_better)


if __name__ == "__main__":
    main()
