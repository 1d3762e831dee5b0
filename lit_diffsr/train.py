"""The one job behind fit / validate / test / predict: instantiate data, model, callbacks, loggers, trainer
from the composed config and run the command. Beyond what conf/ declares it adds only what depends on the
command: the fit-only callbacks are left out of the others, predict gets a `SampleWriter`, and validate /
test / predict write their images, CSV log and record into `samples/<command>[-N]/`. Which checkpoint a run
starts from and whether it may write into its directory is `run_dir`'s decision (`settle_run`)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.spike import TrainingSpikeException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lit_diffsr.errors import ConfigError, DivergenceError, find_user_error
from lit_diffsr.methods.base import class_path, describe_changes
from lit_diffsr.methods.sr3_schedule import use_saved_schedule
from lit_diffsr.run_dir import RunLock, remove_orphan_temporaries, settle_run
from lit_diffsr.runtime import (
    command_directory,
    hydra_job,
    set_num_threads,
    silence_lightning_noise,
    write_record,
)
from lit_diffsr.runtime import register_resolvers as register_runtime_resolvers
from lit_diffsr.safe_load import first_line, load_tensors
from lit_diffsr.slurm.job import register_resolvers

log = logging.getLogger("lit_diffsr")
register_resolvers()  # ${lit_diffsr.slurm_run_name:...} and ${lit_diffsr.wandb_run_id:...} in conf/
register_runtime_resolvers()  # ${lit_diffsr.hydra_record_subdir:...} and ${lit_diffsr.sweep_job_dirname:...}

# Callbacks that only make sense while training (EMA swaps weights; a non-fit run loads EMA weights already).
FIT_ONLY_CALLBACKS = {"ema", "lr_monitor", "checkpoint", "requeue", "history", "divergence", "spike"}


def build_callbacks(cfg: DictConfig, command_dir: Path | None = None) -> list[L.Callback]:
    """The configured callbacks; validate / test / predict write their images into `command_dir`."""
    callbacks = []
    for key, spec in (cfg.get("callbacks") or {}).items():
        if spec is None or (cfg.command != "fit" and key in FIT_ONLY_CALLBACKS):
            continue
        if key == "lr_monitor" and not cfg.get("logger"):
            continue  # Lightning's monitor stops a run that has no logger (logger=none)
        into_command_dir = {"dirpath": str(command_dir)} if key == "sample_grid" and command_dir else {}
        callbacks.append(build(f"callbacks.{key}", spec, **into_command_dir))
    if cfg.command == "predict":
        from lit_diffsr.callbacks import SampleWriter

        callbacks.append(SampleWriter(str(command_dir)))
    return callbacks


def build_loggers(cfg: DictConfig, command_dir: Path | None = None) -> list:
    """The configured loggers; the CSV log (metrics.csv, hparams.yaml) of validate / test / predict goes
    into `command_dir`, so the fit's stays as it was."""
    loggers = []
    for spec in (cfg.get("logger") or {}).values():
        if spec is not None:
            is_csv = command_dir is not None and str(spec.get("_target_", "")).endswith("CSVLogger")
            loggers.append(build("logger", spec, **({"save_dir": str(command_dir)} if is_csv else {})))
    return loggers


def build(section: str, spec: Any, **kwargs: Any) -> Any:
    """`instantiate(spec)`; an unknown or missing argument under `section` (`+model.lrr=1`: a TypeError
    about the constructor's arguments) is the user's error, reported with the section's name."""
    try:
        return instantiate(spec, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        about_arguments = isinstance(cause, TypeError) and "argument" in str(cause)
        if find_user_error(error) is not None or not about_arguments:
            raise
        raise ConfigError(f"{section}: {first_line(cause)}; check the {section}.* values you set") from None


def check_trainer_values(trainer: DictConfig) -> None:
    """A number the Trainer expects, given as text (`trainer.max_steps=abc`), fails deep inside Lightning
    with a message that names no key: check against the Trainer's numeric defaults first."""
    parameters = inspect.signature(L.Trainer.__init__).parameters
    for key, value in trainer.items():
        default = parameters[key].default if key in parameters else None
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and value is not None and not isinstance(value, (int, float)):
            raise ConfigError(f"trainer.{key}={value!r} must be a number (default: {default})")


def run(cfg: DictConfig) -> dict:
    """Run `cfg.command`; returns the metrics the trainer logged (for sweeps and tests)."""
    set_num_threads(cfg.num_threads)
    silence_lightning_noise()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    with contextlib.ExitStack() as held:
        # One fit per run directory; under DDP the rank-0 process holds the lock for all ranks.
        if cfg.command == "fit" and rank_zero_only.rank == 0:
            held.enter_context(RunLock(output_dir))
            remove_orphan_temporaries(output_dir)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            # A sweep job's directory exists only now; a single run was settled before Hydra wrote anything
            # (run_dir.RunDirectoryPolicy).
            cfg.ckpt_path = settle_run(cfg.command, cfg.name, output_dir, cfg.ckpt_path)
        return run_command(cfg, output_dir)


def check_checkpoint_method(ckpt_path: str, model: L.LightningModule) -> dict:
    """`ckpt_path` must hold a checkpoint of the configured method (compared before its weights are
    loaded, which would fail with a size mismatch); returns the checkpoint's hyper-parameters."""
    checkpoint = load_tensors(ckpt_path, what="ckpt_path", mmap=True)
    written_by = checkpoint.get("lit_diffsr_method") if isinstance(checkpoint, dict) else None
    if written_by is None:
        raise ConfigError(f"ckpt_path={ckpt_path} was not written by lit_diffsr (it names no method)")
    if written_by != class_path(type(model)):
        raise ConfigError(
            f"ckpt_path={ckpt_path} is a checkpoint of {written_by.rsplit('.', 1)[-1]}, but the configured "
            f"model is {type(model).__name__}: pass the experiment= the checkpoint was trained with"
        )
    return checkpoint.get("hyper_parameters") or {}


@contextlib.contextmanager
def weights_that_fit(ckpt_path: str | None, saved_hparams: dict, model: L.LightningModule):
    """A checkpoint whose tensors do not fit the configured network is a settings mismatch: say which."""
    try:
        yield
    except RuntimeError as error:
        if ckpt_path is None or "Error(s) in loading state_dict" not in str(error):
            raise
        changes = "; ".join(describe_changes(saved_hparams, dict(model.hparams))) or "none found"
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not fit the configured network ({first_line(error)}); "
            f"settings that differ from the checkpoint's: {changes}"
        ) from None


def run_command(cfg: DictConfig, output_dir: Path) -> dict:
    ckpt_path = cfg.ckpt_path  # settled by run_dir.settle_run: an existing file or None
    datamodule = build("data", cfg.data)
    model = build("model", cfg.model, _recursive_=False)
    saved_hparams = check_checkpoint_method(ckpt_path, model) if ckpt_path else {}
    # validate / test / predict keep their record, images and CSV log in samples/<command>[-N]/.
    command_dir = command_directory(output_dir, cfg.command)
    if command_dir is not None:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        write_record(command_dir, cfg, overrides, ckpt_path)
    loggers = build_loggers(cfg, command_dir)
    check_trainer_values(cfg.trainer)
    trainer: L.Trainer = build(
        "trainer", cfg.trainer, callbacks=build_callbacks(cfg, command_dir), logger=loggers or False
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    command = cfg.command
    if command != "fit" and ckpt_path:
        use_saved_schedule(model, ckpt_path)  # SR3's searched inference schedule, beside its checkpoint
    # The checkpoint is a file like any other: tensors and plain containers only.
    load = {"ckpt_path": ckpt_path, "weights_only": True}
    with weights_that_fit(ckpt_path, saved_hparams, model):
        if command == "fit":
            if signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN:
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # an earlier fit in this process ignored it
            try:
                trainer.fit(model, datamodule=datamodule, **load)
            except TrainingSpikeException as error:  # the opt-in callbacks.spike (Lightning's SpikeDetection)
                raise DivergenceError(
                    f"{error} (callbacks.spike): the run stopped; the batches are listed in "
                    f"{Path(trainer.default_root_dir) / 'skip_batches.json'}. Resume from a checkpoint "
                    "before the spike with a lower model.optim.lr, or relax callbacks.spike.rtol"
                ) from None
            except SIGTERMException:  # a SystemExit with code 0: a killed run must not read as finished
                log.error("fit ended by SIGTERM at step %d; resume with ckpt_path=last", trainer.global_step)
                raise SystemExit(128 + signal.SIGTERM) from None
            # Slurm's requeue warning may still arrive while the job winds down: it must not kill the process.
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        elif command == "predict":
            # Generative methods sample labels (their own predict_dataloader); restoration ones read data.
            uses_data = not is_overridden("predict_dataloader", model)
            trainer.predict(
                model, datamodule=datamodule if uses_data else None, return_predictions=False, **load
            )
        else:
            getattr(trainer, command)(model, datamodule=datamodule, **load)
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
    }
    log.info("Outputs in %s", (command_dir or output_dir).resolve())
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # Each job of a sweep writes into its own sweep sub-directory.
        cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    hydra_job(run, cfg)
