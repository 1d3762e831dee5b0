"""How every sub-command reads its command line, in one place.

- Hydra commands (fit, validate, test, predict, sample) take Hydra overrides: `lit_diffsr.cli.run_hydra`;
- `key=value` commands (evaluate, plot, weights) take options and, for some, plain arguments: `key_values`;
- commands with flags (convert, slurm) use `ArgumentParser`, argparse whose mistakes are ours.

A mistake in any of them is a ConfigError naming the command, which `errors.exit_on_user_error` prints as one
`error:` line with exit status 2; `-h` / `--help` prints the command's usage and exits 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

from lit_diffsr.errors import ConfigError

HELP_FLAGS = ("-h", "--help")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


def key_values(
    command: str, args: Sequence[str], keys: Iterable[str], usage: str, plain: bool = False
) -> tuple[dict[str, str], list[str]]:
    """(options, plain arguments) of `python -m lit_diffsr COMMAND ARGS`: `key=value` options whose key is
    one of `keys` and, when `plain`, the arguments without `=` in their order (else each is an error).
    `usage` is the command line after the command's name, shown with errors and for --help."""
    if any(arg in HELP_FLAGS for arg in args):
        print(f"usage: python -m lit_diffsr {command} {usage}")
        raise SystemExit(0)
    options: dict[str, str] = {}
    others: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep:
            options[key] = value
        elif plain:
            others.append(arg)
        else:
            raise ConfigError(f"{command}: unexpected argument {arg!r}; usage: {command} {usage}")
    unknown = sorted(set(options) - set(keys))
    if unknown:
        raise ConfigError(f"{command}: unknown argument(s) {unknown}; usage: {command} {usage}")
    return options, others


def boolean(command: str, key: str, value: str) -> bool:
    """A `key=true|false` option (also 1/0, yes/no)."""
    if value.lower() not in TRUE_WORDS + FALSE_WORDS:
        raise ConfigError(f"{command}: {key} must be true or false, got {value!r}")
    return value.lower() in TRUE_WORDS


class ArgumentParser(argparse.ArgumentParser):
    """argparse for commands with flags; a wrong argument raises ConfigError (one `error:` line, exit 2, as
    every command) instead of printing argparse's usage block and exiting by itself."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("python -m lit_diffsr ")
        raise ConfigError(f"{command}: {message} (see {command} --help)")
