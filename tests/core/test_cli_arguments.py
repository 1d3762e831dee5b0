"""How the CLI hands arguments to Hydra: flags first, overrides after, the command as a config value."""

from lit_diffsr.cli import available_experiments, hydra_arguments, usage


def test_flags_move_before_overrides():
    args = ["experiment=quickstart", "--cfg", "job", "trainer.max_steps=3", "-m", "seed=1,2"]
    assert hydra_arguments(args, "command=fit") == [
        "--cfg",
        "job",
        "-m",
        "experiment=quickstart",
        "trainer.max_steps=3",
        "seed=1,2",
        "command=fit",
    ]


def test_info_takes_an_optional_value():
    assert hydra_arguments(["--info", "defaults", "a=1"], "c=x") == ["--info", "defaults", "a=1", "c=x"]
    assert hydra_arguments(["--info", "a=1"], "c=x") == ["--info", "a=1", "c=x"]


def test_usage_lists_every_experiment():
    text = usage()
    assert available_experiments(), "the experiments/ folder is not linked into the package"
    assert all(name in text for name in available_experiments())
