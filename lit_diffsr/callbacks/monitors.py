"""Lightning's learning-rate monitor and model summary, without their noise in a diffusion run."""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger("lit_diffsr")


class LearningRateMonitor(LightningLearningRateMonitor):
    """Lightning's monitor, logging one `lr-<Optimizer>` column for an optimiser whose parameter groups
    share their learning rate. The methods put biases and norm scales in a group of their own (no weight
    decay), which Lightning logs as two identical columns, `lr-AdamW/pg1` and `lr-AdamW/pg2`."""

    def _get_optimizer_stats(self, optimizer, names: list[str]) -> dict[str, float]:
        stats = super()._get_optimizer_stats(optimizer, names)
        rates = {group["lr"] for group in optimizer.param_groups}
        if len(names) < 2 or len(rates) != 1:
            return stats
        for name in names:
            stats.pop(name)
        stats[names[0].rsplit("/", 1)[0]] = rates.pop()
        return stats


class ModelSummary(LightningModelSummary):
    """Lightning's summary table without its FLOPs column and total when they are 0: Lightning counts FLOPs
    only for a model with an `example_input_array`, and prints "Total FLOPs: 0" for every other one."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        if total_flops:
            data = summary_data
        else:
            data = [(column, values) for column, values in summary_data if column != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *data
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if "total flops" not in line.lower())
        log.info("\n%s", table)
