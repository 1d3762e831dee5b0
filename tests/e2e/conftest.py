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


@pytest.fixture(scope="session", autouse=True)
def plumbing_lpips_cache(tmp_path_factory):
    """A weight cache with LPIPS files whose backbones are random (heads from the lpips wheel), for
    experiments whose training loss includes LPIPS (autoencoder_kl_f4). The CLI runs check plumbing only;
    no test reads a metric value from these weights. Subprocesses inherit LIT_DIFFSR_CACHE."""
    import warnings

    import lpips
    import torch

    weights = tmp_path_factory.mktemp("lit_diffsr_cache") / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    for net in ("alex", "vgg"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        torch.save(model.state_dict(), weights / f"lpips_{net}_v0.1_full.pth")
    previous = os.environ.get("LIT_DIFFSR_CACHE")
    os.environ["LIT_DIFFSR_CACHE"] = str(weights.parent)
    yield weights.parent
    if previous is None:
        os.environ.pop("LIT_DIFFSR_CACHE")
    else:
        os.environ["LIT_DIFFSR_CACHE"] = previous
