"""What every preparation script shares: jobs, atomic writes, the worker pool, count checks, the report.

A dataset module turns its source tree into a `Plan`: a stream of `Job`s (one source image, one or
more PNG outputs) plus the `CountCheck`s its output must pass. `execute` runs the jobs in a process
pool and writes `<dst>/prepare_report.json`. The guarantees live here, once:

- resumable and idempotent: a job whose outputs all exist is skipped without reading its source;
- atomic: each output is written under a hidden temporary name in its folder, then renamed, so an
  interrupted run never leaves a truncated PNG that a later run would take as finished;
- read-only on the source: sources are only opened for reading (or copied from);
- robust: a source that cannot be decoded is listed in the report, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.progress import track

from lit_diffsr.data.io import load_rgb
from lit_diffsr.data.prepare.resize import resize_square

REPORT_NAME = "prepare_report.json"
# zlib level 3 takes about half the time of PIL's default 6 for PNGs of the same size on photographs.
PNG_COMPRESS_LEVEL = 3


class PrepareError(ValueError):
    """A problem with the arguments or the source tree; the message says how to fix it."""


@dataclass(frozen=True)
class Output:
    """One PNG to write: `make` maps the decoded RGB source to it (None keeps the source pixels)."""

    path: Path
    make: Callable[[Image.Image], Image.Image] | None = None


@dataclass(frozen=True)
class Job:
    """One source image and the outputs made from it.

    `source` is the image file, or a label for the report (e.g. "data_batch_1[17]") when `load`
    produces the pixels. `load` must be picklable (a module-level function or a functools.partial).
    """

    source: str
    outputs: tuple[Output, ...]
    load: Callable[[], Image.Image] | None = None


@dataclass(frozen=True)
class JobResult:
    """What a worker did for one job: outputs written, outputs already there, or why the source failed."""

    source: str
    written: int
    skipped: int
    error: str | None = None


@dataclass(frozen=True)
class CountCheck:
    """How many PNGs a prepared folder must hold.

    With `class_folders`, every class sub-folder of `folder` must hold `per_folder` = (low, high)
    files, there must be `num_classes` of them and `total` files in all (None: not checked);
    otherwise `folder` itself must hold `per_folder` files. `key` is the name `--expect KEY=...`
    uses to override the count (a split or set name).
    """

    key: str
    folder: Path
    per_folder: tuple[int, int]
    class_folders: bool = False
    num_classes: int | None = None
    total: int | None = None

    def overridden(self, per_folder: tuple[int, int]) -> CountCheck:
        """The check for a subset: only the per-folder count, class number and total are unknown."""
        return replace(self, per_folder=per_folder, num_classes=None, total=None)


@dataclass
class Plan:
    """What a dataset module hands to `execute`.

    `failed_sources` lists sources already found unusable while planning (e.g. an unlabelled image).
    """

    jobs: Iterable[Job]
    total: int
    checks: list[CountCheck]
    failed_sources: list[dict[str, str]] = field(default_factory=list)


@dataclass
class PrepareResult:
    written: int = 0
    skipped: int = 0
    failed_sources: list[dict[str, str]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed_sources and not self.mismatches


def square_outputs(dst: Path, folder: str | Path, stem: str, resolutions: list[int]) -> tuple[Output, ...]:
    """`<dst>/<res>/<folder>/<stem>.png` for each resolution, made by `resize_square`."""
    return tuple(
        Output(dst / str(res) / folder / f"{stem}.png", partial(resize_square, size=res))
        for res in resolutions
    )


def positive_int(text: str) -> int:
    """argparse type for pixel sizes, scales and worker counts."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def add_scales_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--scales 2 3 4`: the SR factors a preparer writes (x2, x3 and x4 by default, as the SR benchmarks)."""
    parser.add_argument("--scales", type=positive_int, nargs="+", default=[2, 3, 4], help=help)


def is_plain_rgb_png(path: str) -> bool:
    """True if `path` is an 8-bit RGB PNG without transparency: its bytes already are our output."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.mode == "RGB" and "transparency" not in image.info
    except OSError:
        return False


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(temporary)` in `path`'s folder, then rename the temporary to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)  # atomic on POSIX: readers see the old state or the whole file
    finally:
        temporary.unlink(missing_ok=True)


def run_job(job: Job) -> JobResult:
    """Write the missing outputs of `job`; a source that fails to load becomes `JobResult.error`."""
    pending = [output for output in job.outputs if not output.path.exists()]
    skipped = len(job.outputs) - len(pending)
    if not pending:
        return JobResult(job.source, written=0, skipped=skipped)
    try:
        image = job.load() if job.load is not None else Image.fromarray(load_rgb(job.source))
    except Exception as error:  # any decoder failure means a bad source: report it, keep going
        reason = error.__cause__ or error  # the decoder's own error; the report already names the file
        return JobResult(job.source, written=0, skipped=skipped, error=f"{type(reason).__name__}: {reason}")
    for output in pending:
        if output.make is None and is_plain_rgb_png(job.source):
            write_atomic(output.path, lambda temporary: shutil.copyfile(job.source, temporary))
        else:
            result = image if output.make is None else output.make(image)
            write_atomic(output.path, partial(result.save, format="PNG", compress_level=PNG_COMPRESS_LEVEL))
    return JobResult(job.source, written=len(pending), skipped=skipped)


@contextmanager
def _job_mapper(workers: int) -> Iterator[Callable[[Callable, Iterable], Iterable]]:
    if workers == 1:
        yield map
        return
    # "spawn" starts clean interpreters: no inherited threads or locks (fork is unsafe once a
    # progress-bar thread or a library's thread pool runs). imap_unordered pulls jobs lazily enough
    # that ImageNet's million jobs never sit in memory at once.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda function, items: pool.imap_unordered(function, items, chunksize=16)


def count_pngs(folder: Path) -> int:
    """Number of visible .png files directly in `folder` (0 if it does not exist)."""
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as entries:
        return sum(
            1 for e in entries if e.is_file() and e.name.endswith(".png") and not e.name.startswith(".")
        )


def _describe_range(low: int, high: int) -> str:
    return str(low) if low == high else f"{low} to {high}"


def verify_counts(check: CountCheck) -> tuple[dict[str, Any], list[str]]:
    """Count the PNGs under `check.folder`: a summary for the report and one line per mismatch."""
    low, high = check.per_folder
    expected = _describe_range(low, high)
    if not check.class_folders:
        found = count_pngs(check.folder)
        problems = [] if low <= found <= high else [f"{check.folder}: {found} files, expected {expected}"]
        return {"folder": str(check.folder), "files": found, "expected": expected}, problems
    classes = sorted(p.name for p in check.folder.glob("*") if p.is_dir() and not p.name.startswith("."))
    counts = {name: count_pngs(check.folder / name) for name in classes}
    problems = [
        f"{check.folder / name}: {found} files, expected {expected}"
        for name, found in counts.items()
        if not low <= found <= high
    ]
    if check.num_classes is not None and len(classes) != check.num_classes:
        problems.insert(0, f"{check.folder}: {len(classes)} class folders, expected {check.num_classes}")
    total = sum(counts.values())
    if check.total is not None and total != check.total:
        problems.insert(0, f"{check.folder}: {total} files in all, expected {check.total}")
    summary = {
        "folder": str(check.folder),
        "classes": len(classes),
        "files": total,
        "expected_per_class": expected,
    }
    return summary, problems


def parse_expectations(
    texts: list[str] | None, checks: list[CountCheck]
) -> dict[str | None, tuple[int, int]]:
    """Parse `--expect` values "[KEY=]COUNT" or "[KEY=]LOW-HIGH"; key None applies to every check."""
    known_keys = sorted({check.key.lower() for check in checks})
    expectations: dict[str | None, tuple[int, int]] = {}
    for text in texts or []:
        match = re.fullmatch(r"(?:(?P<key>[^=]+)=)?(?P<low>\d+)(?:-(?P<high>\d+))?", text)
        if match is None or int(match["low"]) > int(match["high"] or match["low"]):
            raise PrepareError(f"--expect {text!r}: use N, LOW-HIGH, KEY=N or KEY=LOW-HIGH (LOW <= HIGH)")
        key = match["key"].lower() if match["key"] else None
        if key is not None and key not in known_keys:
            raise PrepareError(
                f"--expect {text!r}: unknown key {key!r}; this dataset's keys are {known_keys}"
            )
        expectations[key] = (int(match["low"]), int(match["high"] or match["low"]))
    return expectations


def write_report(dst: Path, dataset: str, entry: dict[str, Any]) -> Path:
    """Store `entry` under `dataset` in `<dst>/prepare_report.json`, keeping other datasets' entries."""
    path = dst / REPORT_NAME
    report: dict[str, Any] = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            report = {}  # a damaged report is rebuilt rather than trusted
    report[dataset] = entry
    write_atomic(path, lambda temporary: temporary.write_text(json.dumps(report, indent=2) + "\n"))
    return path


def execute(
    plan: Plan,
    *,
    dataset: str,
    dst: Path,
    workers: int,
    expect: list[str] | None = None,
    options: dict[str, Any] | None = None,
    console: Console | None = None,
) -> PrepareResult:
    """Run `plan`'s jobs on `workers` processes, check the counts, write the report, print a summary."""
    console = console or Console(stderr=True)
    expectations = parse_expectations(expect, plan.checks)
    result = PrepareResult(failed_sources=list(plan.failed_sources))
    with _job_mapper(workers) as map_jobs:
        results = map_jobs(run_job, plan.jobs)
        for job_result in track(results, total=plan.total, description=dataset, console=console):
            result.written += job_result.written
            result.skipped += job_result.skipped
            if job_result.error is not None:
                result.failed_sources.append({"source": job_result.source, "reason": job_result.error})
    result.failed_sources.sort(key=lambda failure: failure["source"])
    count_summaries = []
    for check in plan.checks:
        override = expectations.get(check.key.lower(), expectations.get(None))
        summary, problems = verify_counts(check if override is None else check.overridden(override))
        count_summaries.append({"key": check.key, **summary, "ok": not problems})
        result.mismatches.extend(problems)
    result.report_path = write_report(
        dst,
        dataset,
        {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": options or {},
            "sources": plan.total,
            "files_written": result.written,
            "files_skipped": result.skipped,
            "failed_sources": result.failed_sources,
            "counts": count_summaries,
            "mismatches": result.mismatches,
        },
    )
    _print_summary(console, dataset, result)
    return result


def _print_summary(console: Console, dataset: str, result: PrepareResult, shown: int = 20) -> None:
    console.print(
        f"{dataset}: wrote {result.written} files, skipped {result.skipped} already present; "
        f"report: {result.report_path}",
        soft_wrap=True,
    )
    for title, lines in (
        ("sources could not be used", [f"{f['source']}: {f['reason']}" for f in result.failed_sources]),
        ("count mismatches", result.mismatches),
    ):
        if lines:
            console.print(f"[yellow]{len(lines)} {title}:[/yellow]")
            for line in lines[:shown]:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
            if len(lines) > shown:
                console.print(f"  ... {len(lines) - shown} more in the report")
