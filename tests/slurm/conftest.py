"""A single-node Slurm cluster on this machine for the `slurm`-marked tests (Debian's slurmctld, slurmd and
slurm-client, installed by .ci/run): configured in a temporary folder, started once per session, stopped by
PID. Missing Slurm is a failure, not a skip: deselect with `-m "not slurm"` instead."""

import os
import shutil
import subprocess
import time

import pytest

SLURM_TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
# AuthInfo cred_expire=10: a requeued job may start again 10 s after it ended (the default is 120 s).
SLURM_CONF = """\
ClusterName=litdiffsr
SlurmctldHost=localhost
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: runs jobs on a real single-node Slurm started by the test")


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    """Environment (SLURM_CONF set) for Slurm clients talking to a fresh cluster with one 2-CPU node."""
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"Slurm tools missing: {missing}; `apt-get install -y slurmctld slurmd slurm-client`")
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start slurmctld/slurmd with SlurmUser=root: run them as root")
    root = tmp_path_factory.mktemp("slurm")
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root))
    env = {
        **os.environ,
        "SLURM_CONF": str(conf),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
    }
    console = open(root / "daemons.out", "w")  # their chatter; the real logs are slurmctld.log / slurmd.log
    daemons = [
        subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env, stdout=console, stderr=console)
    ]
    time.sleep(1)
    daemons.append(
        subprocess.Popen(
            ["slurmd", "-D", "-f", str(conf), "-N", "localhost"], env=env, stdout=console, stderr=console
        )
    )
    try:
        deadline = time.monotonic() + 60
        while (
            subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
            ).stdout.strip()
            != "idle"
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"the Slurm node did not come up; see {root}/slurmctld.log and slurmd.log")
            time.sleep(0.5)
        if daemons[0].poll() is not None:  # the node answered another cluster's controller
            pytest.fail(f"slurmctld exited ({daemons[0].returncode}): is another Slurm (or test worker) "
                        f"using port 6817? see {root}/slurmctld.log")
        yield env
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        console.close()
