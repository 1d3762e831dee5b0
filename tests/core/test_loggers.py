"""The CSV logger keeps a resumed run's history instead of deleting metrics.csv."""

import csv

from lit_diffsr.loggers import CSVLogger


def write(logger: CSVLogger, step: int, **metrics: float) -> None:
    logger.log_metrics(metrics, step=step)
    logger.save()


def test_a_second_logger_appends_to_the_existing_history(tmp_path):
    write(CSVLogger(save_dir=tmp_path, name="", version=""), 0, loss=1.0)
    resumed = CSVLogger(save_dir=tmp_path, name="", version="")
    write(resumed, 1, loss=0.5)
    write(resumed, 2, loss=0.25, lr=0.1)  # a new column rewrites the header, keeping the rows
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert [row["loss"] for row in rows] == ["1.0", "0.5", "0.25"]
    assert rows[2]["lr"] == "0.1" and rows[0]["lr"] == ""
