"""The one job behind fit / validate / test / predict: instantiate data, model, callbacks, loggers, trainer
from the composed config and run the command. Kept thin: everything it builds is declared in conf/."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from lit_diffsr.errors import ConfigError
from lit_diffsr.runtime import command_directory, set_num_threads, silence_lightning_noise, write_record
from lit_diffsr.runtime import register_resolvers as register_runtime_resolvers
from lit_diffsr.slurm.job import register_resolvers, slurm_job_id

log = logging.getLogger("lit_diffsr")
register_resolvers()  # ${lit_diffsr.slurm_run_name:...} and ${lit_diffsr.wandb_run_id:...} in conf/
register_runtime_resolvers()  # ${lit_diffsr.hydra_record_subdir:...} and ${lit_diffsr.sweep_job_dirname:...}

# Callbacks that only make sense while training (EMA swaps weights; a non-fit run loads EMA weights already).
FIT_ONLY_CALLBACKS = {"ema", "lr_monitor", "checkpoint", "requeue", "history"}


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The most recently written of `<output_dir>/hpc_ckpt_*.ckpt` (Slurm requeue saves) and
    `<output_dir>/checkpoints/last.ckpt`, or None when the run has none yet."""
    candidates = [*output_dir.glob("hpc_ckpt_*.ckpt"), output_dir / "checkpoints" / "last.ckpt"]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime_ns, default=None)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, command: str = "fit") -> str | None:
    """`last` means `<output_dir>/checkpoints/last.ckpt`; `auto` the newest checkpoint of the run if any
    (see `newest_checkpoint`), which is also what null means for `fit` on a Slurm job, so a requeued job
    resumes; any other value must be an existing file."""
    on_slurm_fit = command == "fit" and slurm_job_id() is not None
    if ckpt_path == "auto" or (ckpt_path in (None, "", "null") and on_slurm_fit):
        newest = newest_checkpoint(output_dir)
        if newest is not None:
            log.info("Resuming from %s", newest)
        return None if newest is None else str(newest)
    if ckpt_path in (None, "", "null"):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (ckpt_path=last looks in paths.output_dir/checkpoints: pass the run's paths.output_dir=DIR)"
        raise ConfigError(f"ckpt_path: no checkpoint at {path}{hint if ckpt_path == 'last' else ''}")
    return str(path)


def refuse_to_mix_runs(output_dir: Path) -> None:
    """A fresh fit into a directory that holds another run's checkpoints would interleave the two runs'
    checkpoints and metrics: stop before the run writes anything (the CLI checks a named directory before
    Hydra writes its .hydra/ too, see `cli.refuse_to_mix_named_run`)."""
    found = sorted(output_dir.glob("checkpoints/*.ckpt")) + sorted(output_dir.glob("hpc_ckpt_*.ckpt"))
    if found:
        raise ConfigError(
            f"paths.output_dir={output_dir} already holds a run ({len(found)} checkpoint(s), e.g. "
            f"{found[0].name}): resume it with ckpt_path=last, or start afresh with another paths.output_dir"
        )


def build_callbacks(cfg: DictConfig, command_dir: Path | None = None) -> list[L.Callback]:
    """The configured callbacks; validate / test / predict write their images into `command_dir`."""
    callbacks = []
    for key, spec in (cfg.get("callbacks") or {}).items():
        if spec is None or (cfg.command != "fit" and key in FIT_ONLY_CALLBACKS):
            continue
        if key == "lr_monitor" and not cfg.get("logger"):
            continue  # Lightning's monitor stops a run that has no logger (logger=none)
        into_command_dir = key == "sample_grid" and command_dir is not None
        callbacks.append(instantiate(spec, **({"dirpath": str(command_dir)} if into_command_dir else {})))
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
            loggers.append(instantiate(spec, **({"save_dir": str(command_dir)} if is_csv else {})))
    return loggers


def run(cfg: DictConfig) -> dict:
    """Run `cfg.command`; returns the metrics the trainer logged (for sweeps and tests)."""
    set_num_threads(cfg.num_threads)
    silence_lightning_noise()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir, cfg.command)
    if cfg.command == "fit" and ckpt_path is None:
        refuse_to_mix_runs(output_dir)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    # validate / test / predict keep their record, images and CSV log in samples/<command>[-N]/.
    command_dir = command_directory(output_dir, cfg.command)
    if command_dir is not None:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        write_record(command_dir, cfg, overrides, ckpt_path)
    loggers = build_loggers(cfg, command_dir)
    callbacks = build_callbacks(cfg, command_dir)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    command = cfg.command
    if command == "fit":
        if signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # an earlier fit in this process ignored it
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        # Slurm's requeue warning may still arrive while the job winds down: it must not kill the process.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    elif command == "predict":
        # Generative methods sample from labels (their own predict_dataloader); restoration methods read data.
        uses_data = not is_overridden("predict_dataloader", model)
        trainer.predict(
            model, datamodule=datamodule if uses_data else None, ckpt_path=ckpt_path, return_predictions=False
        )
    else:
        getattr(trainer, command)(model, datamodule=datamodule, ckpt_path=ckpt_path)
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
    try:
        run(cfg)
    except (ConfigError, InstantiationException) as error:
        # A ConfigError raised while Hydra builds an object arrives wrapped: report the user's error only.
        cause = error if isinstance(error, ConfigError) else error.__cause__
        if not isinstance(cause, ConfigError):
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None
