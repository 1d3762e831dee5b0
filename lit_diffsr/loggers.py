"""Loggers. `CSVLogger` here appends to an existing metrics.csv instead of deleting it: a resumed run keeps
its history (Lightning's CSV logger removes the file when the directory is not empty)."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep the file and continue its header, so later rows append to the same table.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))

    def drop_rows_from(self, step: int) -> int:
        """Remove the saved rows whose `step` is >= `step`; returns how many were removed."""
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            fieldnames, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not row.get("step") or int(row["step"]) < step]
        if len(kept) < len(rows):
            temporary = f"{self.metrics_file_path}.tmp"
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(temporary, self.metrics_file_path)
        return len(rows) - len(kept)


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def drop_rows_from(self, step: int) -> int:
        """Forget the history logged at or after `step` (a resumed run re-logs it), so metrics.csv stays
        one continuous series; unsaved rows are dropped too."""
        self.experiment.metrics = [row for row in self.experiment.metrics if row.get("step", 0) < step]
        return self.experiment.drop_rows_from(step)
