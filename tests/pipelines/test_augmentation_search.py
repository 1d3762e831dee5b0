"""The augmentation-level report over a validate sweep, and the sampling CLI's label choice."""

import pytest
import torch
import yaml

from lit_diffsr.errors import ConfigError
from lit_diffsr.pipelines.augmentation_search import best_level, collect, main
from lit_diffsr.pipelines.cli import cascade_labels


def fake_job(folder, level, rows, validate_record=False):
    """A sweep job's folder: its config in .hydra/ and metrics.csv beside, or (`validate_record`) both in
    samples/validate/ as a validate job writes them."""
    if validate_record:
        folder = folder / "samples" / "validate"
        record = folder
    else:
        record = folder / ".hydra"
    record.mkdir(parents=True)
    config = {"model": {"augmentation": {"sampling_level": level}}}
    (record / "config.yaml").write_text(yaml.safe_dump(config))
    lines = ["step,val/psnr_y,val/lpips"] + [",".join(map(str, row)) for row in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_report_reads_each_jobs_level_and_last_metric_and_picks_the_best(tmp_path, capsys):
    fake_job(tmp_path / "0", 0, [(1, 20.0, 0.5), (2, 21.0, 0.4)])
    fake_job(tmp_path / "1", 100, [(2, 23.5, 0.3)], validate_record=True)
    fake_job(tmp_path / "2", 250, [(2, 22.0, "")])
    assert collect(tmp_path, "val/psnr_y") == {0: 21.0, 100: 23.5, 250: 22.0}
    assert collect(tmp_path, "val/lpips") == {0: 0.4, 100: 0.3}
    assert main([str(tmp_path)]) == 100
    assert "model.augmentation.sampling_level=100" in capsys.readouterr().out
    assert main([str(tmp_path), "--metric", "val/lpips", "--lower-is-better"]) == 100
    assert best_level({0: 1.0, 50: 1.0, 100: 0.5}) == 0  # ties: the weakest augmentation
    assert best_level({0: 1.0, 50: 0.2}, higher_is_better=False) == 50


def test_report_without_results_says_how_to_make_them(tmp_path):
    with pytest.raises(ConfigError, match="validate sweep"):
        collect(tmp_path, "val/psnr_y")


def test_cascade_labels_repeat_the_given_ones_or_draw_with_the_seed():
    assert cascade_labels([1, 2], 5, 10, 0).tolist() == [1, 2, 1, 2, 1]
    drawn = cascade_labels(None, 50, 4, seed=7)
    assert drawn.min() >= 0 and drawn.max() <= 3 and len(drawn.unique()) == 4
    torch.testing.assert_close(drawn, cascade_labels(None, 50, 4, seed=7))
    assert cascade_labels(None, 3, None, 0).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="pipeline.labels"):
        cascade_labels([], 3, 4, 0)
