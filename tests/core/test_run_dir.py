"""The run directory's policy, decided once per job (`run_dir.settle_run`), and the Hydra callback that
decides it for a single run before Hydra creates or writes anything."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lit_diffsr.errors import ConfigError
from lit_diffsr.run_dir import RunDirectoryPolicy, settle_run


def a_run_with_a_checkpoint(folder: Path) -> Path:
    last = folder / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"global_step": 1}, last)
    return last


def test_settle_run_resolves_the_checkpoint_and_refuses_to_mix_runs(tmp_path):
    last = a_run_with_a_checkpoint(tmp_path)
    assert settle_run("fit", "run", tmp_path, "last") == str(last)
    assert settle_run("predict", "run", tmp_path, "auto") == str(last)
    assert settle_run("fit", "run", tmp_path / "new", None) is None
    with pytest.raises(ConfigError, match="already holds a run"):
        settle_run("fit", "run", tmp_path, None)
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        settle_run("fit", "../elsewhere", tmp_path / "new", None)


def config(command: str, output_dir: Path, ckpt_path: str | None, name: str = "run"):
    return OmegaConf.create({"command": command, "name": name, "ckpt_path": ckpt_path,
                             "paths": {"output_dir": str(output_dir)}})


def test_the_callback_settles_a_single_run_into_its_config(tmp_path, capsys):
    last = a_run_with_a_checkpoint(tmp_path)
    settled = config("validate", tmp_path, "last")
    RunDirectoryPolicy().on_run_start(config=settled)
    assert settled.ckpt_path == str(last)
    sample = OmegaConf.create({"command": "sample", "name": "../x", "paths": {"output_dir": str(tmp_path)}})
    RunDirectoryPolicy().on_run_start(config=sample)  # not a trainer command: left alone
    with pytest.raises(SystemExit) as exit_:
        RunDirectoryPolicy().on_run_start(config=config("fit", tmp_path, None))
    assert exit_.value.code == 2 and "error: paths.output_dir=" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        RunDirectoryPolicy().on_multirun_start(config=config("fit", tmp_path, None, name="a/b"))


def test_commands_started_at_once_never_share_a_samples_folder(tmp_path):
    """Each validate / test / predict gets a folder of its own, also when they start at the same moment."""
    import threading

    from lit_diffsr.runtime import command_directory

    (tmp_path / "samples" / "predict").mkdir(parents=True)  # an earlier predict's (even empty): not reused
    claimed, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        claimed.append(command_directory(tmp_path, "predict"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and all(folder.is_dir() for folder in claimed)
    assert {folder.name for folder in claimed} == {f"predict-{n}" for n in range(2, 10)}
    assert command_directory(tmp_path, "fit") is None
