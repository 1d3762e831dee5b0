"""Where samplers report their reverse steps. Sampling a batch takes tens to thousands of network calls,
so a command shows its progress within the batch: the caller (a progress display) installs a listener with
`reverse_step_listener`, and every sampler calls `report_step(done, total)` after each reverse step.
Only Python integers pass: reporting never reads a tensor back from the device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

StepListener = Callable[[int, int], None]
_listener: StepListener | None = None


@contextmanager
def reverse_step_listener(listener: StepListener | None) -> Iterator[None]:
    """Call `listener(done, total)` after each reverse step of the samplers run inside the block."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


def set_reverse_step_listener(listener: StepListener | None) -> None:
    """As `reverse_step_listener`, for callers whose start and end are separate hooks (Lightning's
    batch start / end); None removes it."""
    global _listener
    _listener = listener


def report_step(done: int, total: int) -> None:
    """Step `done` of `total` of the current reverse chain has run."""
    if _listener is not None:
        _listener(done, total)
