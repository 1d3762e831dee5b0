"""`python -m lit_diffsr slurm <submit|sweep> [options] [--] OVERRIDES...`: render slurm/train.sbatch or
slurm/sweep.sbatch, and submit it with sbatch (or print it with --dry-run).

`sweep` expands Hydra sweep syntax (`model.optim.lr=1e-3,1e-4 seed=range(0,2)`: the grid of all
combinations, via Hydra's own override parser) into an overrides file, one task per line."""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
import time
from pathlib import Path
from string import Template

from hydra.core.override_parser.overrides_parser import OverridesParser

from lit_diffsr.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parents[2] / "slurm"


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


def resource_lines(args: argparse.Namespace) -> str:
    lines = []
    if args.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={args.gpus_per_node}")
    for flag in ("partition", "account", "mem"):
        if getattr(args, flag):
            lines.append(f"#SBATCH --{flag}={getattr(args, flag)}")
    return "\n".join(lines)


def render(template: str, args: argparse.Namespace, overrides: list[str], **extra: str) -> str:
    """The sbatch script: `template` (train.sbatch / sweep.sbatch) with the job's resources filled in."""
    tasks = args.tasks_per_node or args.gpus_per_node or 1
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
    parser = argparse.ArgumentParser(prog="python -m lit_diffsr slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("submit", "sweep"), help="one job (train.sbatch) or a job array")
    parser.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")
    parser.add_argument("--job-name", default="lit_diffsr")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
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


def main(argv: list[str]) -> None:
    args = parse_arguments([arg for arg in argv if arg != "--"])
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    if args.action == "submit":
        script = render("train.sbatch", args, args.overrides)
    else:
        fixed, tasks = expand_grid(args.overrides)
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
