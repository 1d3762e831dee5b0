"""`python -m lit_diffsr <command> [experiment=NAME] [hydra overrides]`: one dispatch for every command.

Trainer commands (fit, validate, test, predict) compose the Hydra config in `lit_diffsr/conf` (experiments
come from the top-level `experiments/` folder, linked as the `experiment` group) and run one Lightning job;
`-m` sweeps, `--cfg job` prints the composed config, `--help` after a command shows Hydra's help. `sample`
goes through Hydra the same way; the other commands read their arguments with `lit_diffsr.arguments`. A user
error ends every command the same way: one `error:` line and exit status 2 (`errors.exit_on_user_error`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lit_diffsr.errors import exit_on_user_error


@dataclass(frozen=True)
class Command:
    help: str
    target: str  # "module:function"; the function takes the arguments after the command's name
    hydra: bool = False  # the target is a @hydra.main entry: it reads Hydra overrides from sys.argv


TRAIN = "lit_diffsr.train:hydra_entry"
COMMANDS = {
    "fit": Command("train (or resume with ckpt_path=PATH|last)", TRAIN, hydra=True),
    "validate": Command("run the validation loop on a checkpoint (ckpt_path=...)", TRAIN, hydra=True),
    "test": Command("evaluate a trained model on the test split (ckpt_path=...)", TRAIN, hydra=True),
    "predict": Command(
        "generate images with a checkpoint; writes PNGs and a grid under samples/", TRAIN, hydra=True
    ),
    "sample": Command(
        "sample through a cascade of trained models: sample pipeline=NAME [overrides]",
        "lit_diffsr.pipelines.cli:hydra_entry",
        hydra=True,
    ),
    "evaluate": Command(
        "score folders of images: evaluate pred_dir=... ref_dir=... [lr_dir=... scale=4]",
        "lit_diffsr.evaluate:main",
    ),
    "weights": Command(
        "metric weights for air-gapped nodes: weights fetch [cache_dir=...]", "lit_diffsr.metrics.fetch:main"
    ),
    "convert": Command(
        "published weights -> lit_diffsr: convert <adm|i2sb|diffusers|to-diffusers> IN OUT (--help: presets)",
        "lit_diffsr.convert:main",
    ),
    "slurm": Command(
        "render / submit Slurm jobs and sweeps: slurm <submit|sweep> [--dry-run] ...", "lit_diffsr.slurm:main"
    ),
    "plot": Command(
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
    for name, command in COMMANDS.items():
        lines.append(f"  {name:<10} {command.help}")
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


def run_hydra(entry: Callable[[], None], command: str, args: list[str]) -> None:
    """Run a Hydra command: Hydra parses sys.argv, so hand it the overrides plus the command as a config
    value. Hydra exits 1 after printing its own composition errors (a typo, an unknown experiment): exit 2
    then, as for every user error; a job that started reports its own errors (`runtime.hydra_job`)."""
    from lit_diffsr import runtime

    sys.argv = [f"lit_diffsr {command}", *hydra_arguments(args, f"command={command}")]
    try:
        entry()
    except SystemExit as exit_:
        if exit_.code == 1 and not runtime.hydra_job_started():
            raise SystemExit(2) from None
        raise


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # tracebacks for bug reports, also of user errors
        argv.remove("--debug")
        os.environ["HYDRA_FULL_ERROR"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    command = COMMANDS[name]
    module_name, function_name = command.target.split(":")
    entry = getattr(importlib.import_module(module_name), function_name)
    if command.hydra:
        run_hydra(entry, name, rest)
    else:
        with exit_on_user_error():
            entry(rest)
