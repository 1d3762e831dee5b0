import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None, check: bool = True, timeout: int = 600):
    """Run `python -m lit_diffsr ARGS` in a subprocess, as a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, "-m", "lit_diffsr", *args], cwd=cwd or REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"lit_diffsr {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture
def cli():
    return run_cli
