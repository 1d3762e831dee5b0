"""Errors a user can act on: the CLI prints their message as one line, exits 2, and shows no traceback
(`HYDRA_FULL_ERROR=1` or `--debug` shows it, for bug reports)."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator


class UserError(Exception):
    """Base of every error caused by an input the user controls (a config value, a file, a folder). It adds
    no state, so subclasses may also derive from a built-in (OSError, ValueError) that callers catch."""

    # True for a heading followed by one line per item (e.g. each weight file that could not be fetched):
    # printed as written instead of joined into one line.
    listing = False


class ConfigError(UserError, ValueError):
    """A config value, file or folder is wrong; the message names the key or path and says how to fix it."""


class UntrustedFileError(ConfigError):
    """A file would run code when loaded (a pickled object, or a class or function named in it that is not
    one of this package's own); it was refused before anything in it ran."""


class DivergenceError(UserError):
    """Training produced a non-finite loss or gradient; the run stopped before saving anything non-finite."""


def debugging() -> bool:
    """`--debug` (which sets HYDRA_FULL_ERROR) or HYDRA_FULL_ERROR=1: user errors show their traceback too."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`: itself, or one it was raised from (Hydra wraps errors raised while it
    instantiates an object; a DataLoader worker's error is re-raised in the main process)."""
    from omegaconf.errors import MissingMandatoryValue

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        if isinstance(error, MissingMandatoryValue):  # a `???` in the config that nobody set
            key = getattr(error, "full_key", None) or "a mandatory key"
            return ConfigError(f"{key} is not set: pass {key}=VALUE on the command line or in the experiment")
        seen.add(id(error))
        error = error.__cause__
    return None


def one_line(error: UserError) -> str:
    """The message of `error` on one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its text ("Caught X in DataLoader worker process 0. Original Traceback ..."), whose last
    line is `module.X: message`: keep the message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Run a command: a user error becomes `error: <message>` on stderr and exit code 2, with the traceback
    only when debugging; any other exception (a bug) propagates with its traceback."""
    try:
        yield
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        if debugging():
            traceback.print_exc()
        message = str(user_error).strip() if user_error.listing else one_line(user_error)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
