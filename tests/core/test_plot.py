"""`python -m lit_diffsr plot`: curves of one run or a sweep's runs into a PNG, and a summary table."""

import csv

import pytest
from PIL import Image

from lit_diffsr.cli import main as cli_main
from lit_diffsr.errors import ConfigError
from lit_diffsr.plot import find_runs, plot_runs, read_history


def write_history(folder, losses, val_every=5, scale=1.0):
    """A metrics.csv as the CSV logger writes it: a train/loss row per step, val/loss every `val_every`."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "lr-AdamW", "step", "train/loss", "val/loss"])
        writer.writeheader()
        for step, loss in enumerate(losses):
            writer.writerow({"epoch": 0, "step": step, "train/loss": loss})
            if (step + 1) % val_every == 0:
                writer.writerow({"epoch": 0, "step": step, "val/loss": scale * loss})


def test_a_sweep_plots_every_job_and_the_table_summarises_them(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "quickstart" / "2026-01-01_00-00-00"
    write_history(sweep / "0_model.optim.lr=0.001", [1.0] * 10 + [0.5] * 10)
    write_history(sweep / "1_model.optim.lr=0.0003", [2.0] * 20, scale=0.5)
    write_history(sweep / "1_model.optim.lr=0.0003" / "samples" / "validate", [9.0] * 3)  # not a run
    out = tmp_path / "curves.png"
    cli_main(["plot", str(sweep), f"out={out}"])
    printed = capsys.readouterr().out
    assert Image.open(out).size[0] > 300
    lines = printed.splitlines()

    def cells(line):
        return [cell.strip() for cell in line.split("|")[1:-1]]

    assert cells(lines[0]) == ["run", "last step", "train/loss", "val/loss"]
    assert len({len(line) for line in lines[:4]}) == 1  # the columns line up
    # train/loss: mean of the last tenth of its points (2 of 20); val/loss: the last value
    assert cells(lines[2]) == ["0_model.optim.lr=0.001", "19", "0.5", "0.5"]
    assert cells(lines[3]) == ["1_model.optim.lr=0.0003", "19", "2", "1"]
    assert len(lines) == 4 + 2 and str(out) in lines[-1]


def test_several_run_directories_and_chosen_metrics(tmp_path):
    write_history(tmp_path / "a", [1.0, 0.8, 0.6, 0.4, 0.2])
    write_history(tmp_path / "b", [1.0, 0.9, 0.8, 0.7, 0.6])
    assert list(find_runs([tmp_path / "a", tmp_path / "b"])) == ["a", "b"]
    path, table = plot_runs([tmp_path / "a", tmp_path / "b"], metrics=["val/loss"])
    assert path == tmp_path / "a" / "curves.png" and path.is_file()
    assert "train/loss" not in table and "0.6" in table
    assert read_history(tmp_path / "a" / "metrics.csv")["val/loss"] == [(4, 0.2)]
    with pytest.raises(ConfigError, match="metrics=val/psnr logged by no run"):
        plot_runs([tmp_path / "a"], metrics=["val/psnr"])


def test_user_errors_are_one_line(tmp_path, capsys):
    for args in ([str(tmp_path / "missing")], [str(tmp_path)], [], [str(tmp_path), "colour=red"]):
        with pytest.raises(SystemExit) as stopped:
            cli_main(["plot", *args])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert error.startswith("error: plot: ") and error.count("\n") == 1
