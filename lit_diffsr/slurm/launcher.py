"""`python -m lit_diffsr slurm <submit|sweep> [options] [--] OVERRIDES...`: render slurm/train.sbatch or
slurm/sweep.sbatch, and submit it with sbatch (or print it with --dry-run).

`sweep` expands Hydra sweep syntax (`model.optim.lr=1e-3,1e-4 seed=range(0,2)`: the grid of all
combinations, via Hydra's own override parser) into an overrides file, one task per line.

Before rendering, the config of every job is composed as `fit` will compose it, so a typo, an unknown
experiment or config option fails here in one line (exit status 2) rather than after the queue; a CPU trainer
on GPU nodes gets trainer.accelerator=gpu (said on stderr), a GPU trainer without GPUs is refused."""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from string import Template

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import lit_diffsr.conf  # noqa: F401  (the model YAMLs' `settings/` nodes, before composing)
from lit_diffsr.arguments import ArgumentParser
from lit_diffsr.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parents[2] / "slurm"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GPU_ACCELERATORS = ("gpu", "cuda")


def expand_grid(overrides: list[str]) -> tuple[list[str], list[list[str]]]:
    """Split overrides into the fixed ones and the grid: one list of overrides per task (cartesian product
    of every sweep override's values, in the order given)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:  # Hydra raises OverrideParseException with the offending text
        raise ConfigError(f"cannot parse the overrides {overrides}: {error}") from error
    pairs = zip(overrides, parsed, strict=True)
    fixed = [text for text, override in pairs if not override.is_sweep_override()]
    axes = [
        [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
        for override in parsed
        if override.is_sweep_override()
    ]
    return fixed, [list(task) for task in itertools.product(*axes)]


def _one_line(error: Exception) -> str:
    """Hydra's multi-line composition error as one line: the problem, then the available options if listed."""
    problem, _, options = str(error).partition("Available options in")
    text = " ".join(line.strip() for line in problem.splitlines() if line.strip())
    text = text.removeprefix("In 'config': ")
    listed = options.split("Config search path:")[0].splitlines()[1:]
    return f"{text}; available: {', '.join(o.strip() for o in listed if o.strip())}" if listed else text


def compose_jobs(jobs: list[list[str]], launcher_overrides: list[str]) -> list[DictConfig]:
    """The config `fit` composes from each list of overrides plus `launcher_overrides` (Hydra's compose API
    on lit_diffsr/conf, experiments included); nothing is instantiated or resolved."""
    configs = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="lit_diffsr"):
        for overrides in jobs:
            try:
                configs.append(compose("config", overrides=[*overrides, *launcher_overrides, "command=fit"]))
            except (HydraException, OmegaConfBaseException) as error:
                raise ConfigError(f"{shlex.join(overrides)} does not compose: {_one_line(error)}") from None
    return configs


def needs_gpu_accelerator(config: DictConfig, args: argparse.Namespace) -> bool:
    """True for a CPU trainer on GPU nodes (the launcher then adds trainer.accelerator=gpu); a GPU trainer
    on a job without GPUs is an error, since it would fail only once it leaves the queue."""
    accelerator = str(config.trainer.accelerator)
    if not args.gpus_per_node and accelerator in GPU_ACCELERATORS:
        raise ConfigError(
            f"{config.name} trains on GPU (trainer.accelerator={accelerator}) but the job asks for no GPU: "
            f"add --gpus-per-node N, or trainer=cpu"
        )
    return bool(args.gpus_per_node) and accelerator == "cpu"


def _sbatch_line(option: str) -> str:
    """`mail-type=END` -> `#SBATCH --mail-type=END`, `--exclusive` -> `#SBATCH --exclusive`."""
    option = option.strip()
    return f"#SBATCH {option if option.startswith('-') else '--' + option}"


def resource_lines(args: argparse.Namespace) -> str:
    lines = []
    if args.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={args.gpus_per_node}")
    for flag in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(args, flag):
            lines.append(f"#SBATCH --{flag}={getattr(args, flag)}")
    lines += [_sbatch_line(option) for option in args.sbatch]
    return "\n".join(lines)


def render(template: str, args: argparse.Namespace, overrides: list[str], **extra: str) -> str:
    """The sbatch script: `template` (train.sbatch / sweep.sbatch) with the job's resources filled in."""
    tasks = args.tasks_per_node or args.gpus_per_node or 1
    for name, value in vars(args).items():  # a newline would end an #SBATCH line and start a command
        if any("\n" in str(item) for item in (value if isinstance(value, list) else [value])):
            raise ConfigError(f"--{name.replace('_', '-')}: no line breaks allowed, got {value!r}")
    values = {
        "job_name": args.job_name,
        "nodes": str(args.nodes),
        "tasks_per_node": str(tasks),
        "cpus_per_task": str(args.cpus_per_task),
        "time": args.time,
        "log_dir": str(args.log_dir.resolve()),
        "resource_lines": resource_lines(args),
        "workdir": shlex.quote(str(args.workdir.resolve())),
        "python": shlex.quote(args.python),
        "overrides": shlex.join(overrides),
        **extra,
    }
    return Template((TEMPLATES / template).read_text()).substitute(values)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m lit_diffsr slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("submit", "sweep"), help="one job (train.sbatch) or a job array")
    parser.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")
    parser.add_argument("--job-name", default=None, help="default: the experiment's name")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--qos", default=None, help="quality of service")
    parser.add_argument("--constraint", default=None, help="node features, e.g. a100|h100")
    parser.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="any other #SBATCH option, repeatable: --sbatch mail-type=END --sbatch=--exclusive",
    )
    parser.add_argument("--time", default="24:00:00", help="wall-clock limit, HH:MM:SS or D-HH:MM:SS")
    parser.add_argument("--nodes", type=int, default=1, help="= trainer.num_nodes")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (0: a CPU job)")
    parser.add_argument("--tasks-per-node", type=int, help="= trainer.devices (default: GPUs, or 1)")
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    parser.add_argument("--max-parallel", type=int, default=None, help="sweep: tasks running at once")
    parser.add_argument("--log-dir", type=Path, default=Path("runs/slurm"), help="logs, scripts, overrides")
    parser.add_argument("--workdir", type=Path, default=Path.cwd(), help="where the job runs (repository)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the job runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (sweep: a,b,c or range() axes)")
    return parser.parse_intermixed_args(argv)


def checked_overrides(args: argparse.Namespace) -> tuple[list[str], list[list[str]]]:
    """(overrides of every task, one list of overrides per array task; [[]] for submit) after composing each
    task's config and checking its accelerator; sets args.job_name from the experiment's name if not given."""
    fixed, tasks = expand_grid(args.overrides) if args.action == "sweep" else (args.overrides, [[]])
    devices = [
        f"trainer.num_nodes={args.nodes}",
        f"trainer.devices={args.tasks_per_node or args.gpus_per_node or 1}",
    ]
    configs = compose_jobs([[*fixed, *task] for task in tasks], devices)
    to_gpu = [needs_gpu_accelerator(config, args) for config in configs]
    if any(to_gpu):
        print(
            f"note: {configs[to_gpu.index(True)].name} trains on CPU (trainer.accelerator=cpu) but the job "
            f"asks for {args.gpus_per_node} GPU(s) per node: added trainer.accelerator=gpu (or give "
            f"trainer=gpu)",
            file=sys.stderr,
        )
    if args.job_name is None:
        args.job_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(configs[0].name))
    if all(to_gpu):
        return [*fixed, "trainer.accelerator=gpu"], tasks
    fix = lambda task, needed: [*task, "trainer.accelerator=gpu"] if needed else task
    return fixed, [fix(task, needed) for task, needed in zip(tasks, to_gpu, strict=True)]


def main(argv: list[str]) -> None:
    args = parse_arguments([arg for arg in argv if arg != "--"])
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    fixed, tasks = checked_overrides(args)
    if args.action == "submit":
        script = render("train.sbatch", args, fixed)
    else:
        overrides_file = (args.log_dir / f"{args.job_name}-{stamp}.overrides").resolve()
        if not args.dry_run:
            overrides_file.parent.mkdir(parents=True, exist_ok=True)
            overrides_file.write_text("".join(shlex.join(task) + "\n" for task in tasks))
        max_parallel = f"%{args.max_parallel}" if args.max_parallel else ""
        script = render(
            "sweep.sbatch",
            args,
            fixed,
            last_task=str(len(tasks) - 1),
            max_parallel=max_parallel,
            overrides_file=shlex.quote(str(overrides_file)),
        )
    if args.dry_run:
        print(script)
        if args.action == "sweep":
            print("# overrides file, one task per line:")
            print("".join(f"# {shlex.join(task)}\n" for task in tasks), end="")
        return
    args.log_dir.mkdir(parents=True, exist_ok=True)
    script_file = args.log_dir / f"{args.job_name}-{stamp}.sbatch"
    script_file.write_text(script)
    try:
        result = subprocess.run(["sbatch", "--parsable", str(script_file)], capture_output=True, text=True)
    except FileNotFoundError:
        raise ConfigError("sbatch not found: run on a Slurm login node, or use --dry-run") from None
    if result.returncode != 0:
        raise ConfigError(f"sbatch {script_file} failed: {result.stderr.strip()}")
    print(f"submitted job {result.stdout.strip().split(';')[0]} ({script_file})")
