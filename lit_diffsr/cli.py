"""`python -m lit_diffsr <command> [experiment=NAME] [hydra overrides]`.

Trainer commands (fit, validate, test, predict) compose the Hydra config in `lit_diffsr/conf` (experiments
come from the top-level `experiments/` folder, linked as the `experiment` group) and run one Lightning job;
`-m` sweeps, `--cfg job` prints the composed config, `--help` after a command shows Hydra's help.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from lit_diffsr.errors import exit_on_user_error

TRAINER_COMMANDS = {
    "fit": "train (or resume with ckpt_path=PATH|last)",
    "validate": "run the validation loop on a checkpoint (ckpt_path=...)",
    "test": "evaluate a trained model on the test split (ckpt_path=...)",
    "predict": "generate images with a checkpoint; writes PNGs and a grid under samples/",
}
# Other commands: name -> (help, "module:function" taking the remaining arguments).
OTHER_COMMANDS = {
    "sample": (
        "sample through a cascade of trained models: sample pipeline=NAME [overrides]",
        "lit_diffsr.pipelines.cli:main",
    ),
    "evaluate": (
        "score folders of images: evaluate pred_dir=... ref_dir=... [lr_dir=... scale=4]",
        "lit_diffsr.evaluate:main",
    ),
    "weights": (
        "metric weights for air-gapped nodes: weights fetch [cache_dir=...]",
        "lit_diffsr.metrics.fetch:main",
    ),
    "convert": (
        "published weights -> lit_diffsr: convert <adm|i2sb|diffusers|to-diffusers> IN OUT (--help: presets)",
        "lit_diffsr.convert:main",
    ),
    "slurm": (
        "render / submit Slurm jobs and sweeps: slurm <submit|sweep> [--dry-run] ...",
        "lit_diffsr.slurm:main",
    ),
    "plot": (
        "loss and metric curves of runs or sweeps into a PNG, and a table: plot RUN_DIR... [out=FILE.png]",
        "lit_diffsr.plot:main",
    ),
}
CONF_DIR = Path(__file__).parent / "conf"


def available_experiments() -> list[str]:
    folder = CONF_DIR / "experiment"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def usage() -> str:
    lines = ["usage: python -m lit_diffsr <command> [experiment=NAME] [key=value ...] [-m] [--cfg job]", ""]
    lines.append("commands:")
    for name, text in TRAINER_COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    for name, (text, _) in OTHER_COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    lines += ["", "experiments (experiment=NAME):"]
    lines += [f"  {name}" for name in available_experiments()]
    lines += [
        "",
        "Your own experiments: put NAME.yaml (starting with `# @package _global_`) in DIR/experiment/",
        "and add `--config-dir DIR` (or hydra.searchpath=[file://DIR]).",
        "Examples:",
        "  python -m lit_diffsr fit experiment=quickstart",
        "  python -m lit_diffsr fit experiment=quickstart paths.output_dir=runs/qs ckpt_path=last",
        "  python -m lit_diffsr predict experiment=quickstart paths.output_dir=runs/qs ckpt_path=last",
    ]
    return "\n".join(lines)


# Hydra's flags that take a value (`--info` takes an optional one).
HYDRA_VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def hydra_arguments(args: list[str], extra_override: str) -> list[str]:
    """Flags first, then overrides: Hydra's argparse cannot take overrides on both sides of a flag."""
    flags, overrides = [], []
    tokens = iter(args)
    for token in tokens:
        if not token.startswith("-"):
            overrides.append(token)
            continue
        flags.append(token)
        takes_value = token in HYDRA_VALUE_FLAGS and "=" not in token
        if takes_value or token == "--info":
            value = next(tokens, None)
            if value is None:
                continue
            if takes_value or value in INFO_CHOICES:
                flags.append(value)
            else:
                overrides.append(value)
    return [*flags, *overrides, extra_override]


def check_before_hydra_writes(command: str, overrides: list[str]) -> None:
    """Checks that must run before Hydra creates the run directory and writes its .hydra/: a `name=` that
    would put the run outside paths.log_dir, and `fit paths.output_dir=DIR` (no resume) into a DIR that
    holds a run, whose composed config Hydra would replace. Sweeps, names set in experiment files and
    interpolated paths are left to the same checks in `train.run` (after Hydra's write)."""
    from lit_diffsr.run_dir import check_run_name, refuse_to_mix_runs, resolve_ckpt_path

    values = dict(token.split("=", 1) for token in overrides if "=" in token and not token.startswith("-"))
    if {"-m", "--multirun"} & set(overrides):
        return
    if "name" in values:
        check_run_name(values["name"])
    directory = values.get("paths.output_dir")
    if command != "fit" or not directory or "${" in directory:
        return
    if resolve_ckpt_path(values.get("ckpt_path"), Path(directory), "fit") is None:
        refuse_to_mix_runs(Path(directory))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # tracebacks for bug reports, also of user errors
        argv.remove("--debug")
        os.environ["HYDRA_FULL_ERROR"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command in TRAINER_COMMANDS:
        from lit_diffsr import train

        with exit_on_user_error():
            check_before_hydra_writes(command, rest)
        # Hydra parses sys.argv: hand it the overrides plus the command as a config value.
        sys.argv = [f"lit_diffsr {command}", *hydra_arguments(rest, f"command={command}")]
        try:
            train.hydra_entry()
        except SystemExit as exit_:
            # Hydra exits 1 after printing its own composition errors (a typo, an unknown experiment).
            if exit_.code == 1 and not train.JOB_STARTED:
                raise SystemExit(2) from None
            raise
    elif command in OTHER_COMMANDS:
        module_name, function_name = OTHER_COMMANDS[command][1].split(":")
        with exit_on_user_error():
            getattr(importlib.import_module(module_name), function_name)(rest)
    else:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
