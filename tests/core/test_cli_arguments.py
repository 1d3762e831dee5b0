"""How the CLI hands arguments to Hydra (flags first, overrides after, the command as a config value), and
how every command reads its arguments and ends on a user error (one parsing layer, exit status 2)."""

import argparse
import sys

import pytest

from lit_diffsr import runtime
from lit_diffsr.arguments import ArgumentParser, boolean, key_values
from lit_diffsr.cli import COMMANDS, available_experiments, hydra_arguments, main, usage
from lit_diffsr.errors import ConfigError


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


def test_key_values_splits_options_from_plain_arguments_and_names_every_mistake():
    options, plain = key_values("plot", ["a", "out=x.png", "b"], {"out"}, "RUN...", plain=True)
    assert options == {"out": "x.png"} and plain == ["a", "b"]
    with pytest.raises(ConfigError, match=r"^evaluate: unexpected argument 'pred_dir'; usage: evaluate X"):
        key_values("evaluate", ["pred_dir"], {"pred_dir"}, "X")
    with pytest.raises(ConfigError, match=r"^weights fetch: unknown argument\(s\) \['cache', 'z'\]"):
        key_values("weights fetch", ["z=1", "cache=/tmp", "names=a"], {"names"}, "X")
    assert boolean("evaluate", "paired", "No") is False and boolean("evaluate", "paired", "1") is True
    with pytest.raises(ConfigError, match="evaluate: paired must be true or false, got 'maybe'"):
        boolean("evaluate", "paired", "maybe")


def test_argument_parser_mistakes_are_config_errors_naming_the_command():
    parser = ArgumentParser(prog="python -m lit_diffsr convert")
    parser.add_argument("path")
    with pytest.raises(ConfigError, match=r"^convert: the following arguments are required: path \(see"):
        parser.parse_args([])
    assert parser.parse_args(["x"]) == argparse.Namespace(path="x")


@pytest.fixture
def fresh_process(monkeypatch):
    """As in a new process: no Hydra job has started, and sys.argv is restored after the call."""
    monkeypatch.setattr(runtime, "_hydra_job_started", False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, fresh_process, capsys):
    try:
        main([command, "--help"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    assert f"python -m lit_diffsr {command} " in capsys.readouterr().out


@pytest.mark.parametrize("args", [
    ["evaluate", "pred_dir"],
    ["plot", "colour=red"],
    ["weights", "fetch", "cache=x"],
    ["convert", "adm"],
    ["slurm", "bogus"],
    ["sample", "pipeline=no_such_pipeline"],
    ["predict", "experiment=no_such_experiment"],
    ["no_such_command"],
], ids=lambda args: args[0])
def test_every_user_error_exits_with_status_2(args, fresh_process, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err.lower()
