"""Slurm: job identity for run directories and W&B (`job`), and the sbatch launcher (`launcher`)."""


from lit_diffsr.errors import exit_on_user_error
from lit_diffsr.slurm.job import slurm_job_id, slurm_run_name, wandb_run_id
from lit_diffsr.slurm.launcher import expand_grid, render


def main(argv: list[str]) -> None:
    """Entry of `python -m lit_diffsr slurm ...`; user errors print without a traceback."""
    from lit_diffsr.slurm.launcher import main as launch

    with exit_on_user_error():
        launch(argv)


__all__ = ["expand_grid", "main", "render", "slurm_job_id", "slurm_run_name", "wandb_run_id"]
