"""Progress reports of the samplers, plain progress lines, sample-grid layout and the runtime settings."""

import logging
import warnings

import lightning as L
import pytest
import torch

from lit_diffsr.callbacks.progress import LogProgress, ProgressBar, ReverseStepLog, duration, progress_display
from lit_diffsr.callbacks.samples import comparison_grid, enlarged
from lit_diffsr.diffusion import GaussianDiffusion, SchrodingerBridge, get_beta_schedule, sample_ancestral
from lit_diffsr.diffusion.progress import report_step, reverse_step_listener
from lit_diffsr.errors import ConfigError
from lit_diffsr.runtime import (
    LIGHTNING_CHATTER,
    DropMessages,
    available_cpus,
    configured_data_dir,
    hydra_record_subdir,
    set_num_threads,
    silence_lightning_noise,
    sweep_job_dirname,
)


def test_samplers_report_every_reverse_step():
    reports = []
    with reverse_step_listener(lambda done, total: reports.append((done, total))):
        process = GaussianDiffusion(get_beta_schedule("cosine", 10), variance="fixed_small")
        sample_ancestral(process.respaced("4"), lambda x, t: torch.zeros_like(x), (2, 1, 4, 4))
        bridge = SchrodingerBridge(n_steps=20)
        bridge.sample(torch.zeros(2, 1, 4, 4), lambda x, t: torch.zeros_like(x), nfe=5)
    assert reports == [(i, 4) for i in range(1, 5)] + [(i, 5) for i in range(1, 6)]
    report_step(1, 1)  # outside the block nobody listens: no error, nothing recorded
    assert len(reports) == 9


def test_reverse_step_log_writes_at_most_one_line_per_interval(caplog):
    progress = ReverseStepLog(every_s=1e9)
    progress.begin("predict batch 1/2")
    with caplog.at_level(logging.INFO, logger="lit_diffsr"):
        for done in range(1, 11):
            progress(done, 10)
    # the interval never passes: only the chain's last step is logged
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["predict batch 1/2: reverse step 10/10"]
    assert duration(3723) == "1:02:03" and duration(83) == "1:23" and duration(float("inf")) == "?"


class TinyRegression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).square().mean()
        self.log("loss", loss, logger=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_log_progress_writes_step_loss_rate_and_time_left(caplog):
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[LogProgress(every_s=0)])
    with caplog.at_level(logging.INFO, logger="lit_diffsr"):
        trainer.fit(TinyRegression(), train_dataloaders=torch.utils.data.DataLoader(torch.randn(8, 2)))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" (")[0] for line in lines if line.startswith("fit step")] == [
        "fit step 1/3", "fit step 2/3", "fit step 3/3"]
    last = next(line for line in lines if line.startswith("fit step 3/3"))
    assert f"loss {float(trainer.callback_metrics['loss']):.4g}," in last and "steps/s" in last
    assert lines[-1].startswith("fit: done in")
    with pytest.raises(ValueError, match="every_s"):
        LogProgress(every_s=-1)


def test_progress_display_follows_the_terminal(monkeypatch):
    assert isinstance(progress_display(plain=True), LogProgress)
    assert isinstance(progress_display(plain=False), ProgressBar)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert isinstance(progress_display(log_every_s=5.0), LogProgress)


def test_comparison_grid_rows_of_eight_enlarged_with_groups_of_rows():
    count, size = 10, 16
    sample = torch.rand(count, 3, size, size)
    condition, target = torch.zeros_like(sample), torch.full_like(sample, 0.5)
    grid = comparison_grid([condition, sample, target], padding=2)
    tile = 64  # 16 px enlarged 4x (nearest)
    # 8 columns; two groups (images 0-7, 8-9) of three rows each
    assert grid.shape == (3, 6 * (tile + 2) + 2, 8 * (tile + 2) + 2)

    def cell(row, column):
        top, left = 2 + row * (tile + 2), 2 + column * (tile + 2)
        return grid[:, top : top + tile, left : left + tile]

    torch.testing.assert_close(cell(4, 1), enlarged(sample[9:10])[0])  # second group, sample row, image 9
    torch.testing.assert_close(cell(3, 0), torch.zeros(3, tile, tile))  # second group's condition row
    assert bool((cell(5, 2) == 1).all())  # beyond image 9: blank (white) tiles
    assert torch.equal(enlarged(sample)[:, :, ::4, ::4], sample)
    big = torch.rand(2, 3, 64, 80)
    assert enlarged(big) is big


def test_num_threads_auto_and_errors():
    before = torch.get_num_threads()
    try:
        set_num_threads("auto")
        assert 1 <= torch.get_num_threads() <= available_cpus()
        set_num_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match="num_threads='many'"):
            set_num_threads("many")
    finally:
        torch.set_num_threads(before)


def test_where_records_go_and_sweep_job_names():
    assert hydra_record_subdir("fit", "RUN") == ".hydra" and hydra_record_subdir("sample", "RUN") == ".hydra"
    assert hydra_record_subdir("predict", "RUN") is None
    assert hydra_record_subdir("validate", "MULTIRUN") == ".hydra"  # each sweep job has its own directory
    assert sweep_job_dirname(3, "model.optim.lr=0.001,x=a/b") == "3_model.optim.lr=0.001,x=a_b"
    assert sweep_job_dirname(0, "") == "0" and len(sweep_job_dirname(1, "x=" + "9" * 300)) == 100


def test_lightning_noise_is_silenced_and_other_warnings_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_lightning_noise()
        warnings.warn("The `srun` command is available on your system but is not used. HINT", stacklevel=1)
        warnings.warn("a warning that matters", stacklevel=1)
    assert [str(warning.message) for warning in caught] == ["a warning that matters"]
    tip = logging.LogRecord("lightning", logging.INFO, "", 0, "💡 Tip: try our cloud", None, None)
    kept = logging.LogRecord("lightning", logging.INFO, "", 0, "GPU available: False", None, None)
    assert [DropMessages(LIGHTNING_CHATTER).filter(record) for record in (tip, kept)] == [False, True]


def test_scripts_find_the_configured_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_DIFFSR_DATA", str(tmp_path))
    assert configured_data_dir() == tmp_path
    monkeypatch.delenv("LIT_DIFFSR_DATA")
    monkeypatch.setenv("LIT_DIFFSR_ROOT", str(tmp_path / "root"))
    assert configured_data_dir() == tmp_path / "root" / "datasets"
