"""Folders against shards (data.format=shards): images/s delivered by the train loader, files opened per
epoch, and the DataModule's start-up (listing / indexing) as the item count grows.

Data made here, under --workdir (kept between runs, so a second run skips the writing):
- photos: crops of the bundled demo photographs, class = photograph, saved as PNG (as `prepare` writes),
  at 32 and 64 px (open-bound on a cluster file system, where every open is a metadata request) and
  256 px (decode-bound), packed with `python -m lit_diffsr.data.prepare shards` as file bytes and as raw
  pixels (`--encoding raw`);
- start-up: N tiny PNGs (--tiny-size px, 1000 per class folder) for each N in --startup-sizes, and their
  shards.

Throughput: the train loader of `ImageDataModule(format=folders|shards)` at the image's own resolution
(so the crop costs the same in both), 0 and 2 workers, timed after the first batch (worker start-up), the
candidates interleaved round by round; "read only": reading and decoding the train set in the sampler's
order, without crops or tensors. Files opened: `open()` / `os.open()` calls in one epoch of a fresh
DataModule with 0 workers. Results: results/data_shards.md (throughput), results/data_shards_startup.md.

    python -m benchmarks.data_shards [--workdir DIR] [--items 32=4096 64=2048 256=384] [--batch 32]
        [--rounds 3] [--startup-sizes 10000 100000 1000000] [--tiny-size 4]
"""

from __future__ import annotations

import argparse
import builtins
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import interleaved, load_average, markdown_table, median, spread, write_results
from lit_diffsr.data.datamodule import ImageDataModule
from lit_diffsr.data.datasets import load_demo_photos
from lit_diffsr.data.io import load_rgb
from lit_diffsr.data.prepare.cli import main as prepare

PNG_OPTIONS = {"compress_level": 3}  # what `python -m lit_diffsr.data.prepare` writes


def write_photo_crops(folder: Path, size: int, count: int) -> None:
    """`count` random size x size crops of the demo photos, as class folders (class = photograph)."""
    photos = load_demo_photos(2 * size)
    rng = np.random.default_rng(size)
    for index in range(count):
        label = index % len(photos)
        photo = photos[label]
        top, left = (int(rng.integers(side - size + 1)) for side in photo.shape[:2])
        path = folder / "train" / f"photo{label}" / f"{index:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top : top + size, left : left + size]).save(path, **PNG_OPTIONS)


def write_tiny_files(folder: Path, count: int, size: int) -> None:
    """`count` PNGs of size x size pixels (the same bytes each time: only the file count matters), 1000 a
    class folder."""
    folder.mkdir(parents=True)
    image = folder.parent / f"tiny{size}.png"
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(image)
    data = image.read_bytes()
    for index in range(count):
        path = folder / "train" / f"class{index // 1000:04d}" / f"{index:07d}.png"
        if index % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def make_once(folder: Path, write: Callable[[Path], None], encodings: tuple[str, ...] = ("file",)) -> dict:
    """The folder tree and its shard sets (one per encoding), written unless a finished run left them."""
    roots = {
        "folders": folder / "folders",
        **{f"shards {code}": folder / f"shards_{code}" for code in encodings},
    }
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        write(roots["folders"])
        for code in encodings:
            destination = str(roots[f"shards {code}"])
            assert (
                prepare(["shards", "--src", str(roots["folders"]), "--dst", destination, "--encoding", code])
                == 0
            )
        (folder / "done").touch()
    return roots


def datamodule(root: Path, candidate: str, resolution: int, batch: int, workers: int) -> ImageDataModule:
    return ImageDataModule(
        "folder",
        root=str(root),
        format=candidate.split()[0],
        resolution=resolution,
        batch_size=batch,
        num_workers=workers,
        num_val=1,
        random_flip=True,
    )


def read_seconds_per_image(module: ImageDataModule) -> Callable[[], float]:
    """Seconds per image to read and decode the train set in the sampler's order, without crops or tensors."""
    dataset = module.dataset("train")
    order = [index for index, _ in module.train_dataloader().sampler]
    if hasattr(dataset, "files"):
        read = lambda index: load_rgb(dataset.files[index])  # noqa: E731
    else:
        read = lambda index: dataset._read(int(dataset.indices[index]))  # noqa: E731

    def run() -> float:
        start = time.perf_counter()
        for index in order:
            read(index)
        return (time.perf_counter() - start) / len(order)

    return run


def epoch_seconds_per_image(module: ImageDataModule) -> Callable[[], float]:
    """Seconds per image over one epoch of the train loader, after its first batch."""

    def run() -> float:
        loader = iter(module.train_dataloader())
        first = len(next(loader)["hr"])
        start, images = time.perf_counter(), 0
        for batch in loader:
            images += len(batch["hr"])
        assert images + first == len(module.dataset("train"))
        return (time.perf_counter() - start) / images

    return run


def files_opened(module: ImageDataModule) -> int:
    """How many files one epoch of a fresh train loader opens (0 workers: every open is in this process)."""
    counts = [0]

    def counting(function):
        def wrapper(*args, **kwargs):
            counts[0] += 1
            return function(*args, **kwargs)

        return wrapper

    originals = builtins.open, os.open
    builtins.open, os.open = (counting(function) for function in originals)
    try:
        for _ in module.train_dataloader():
            pass
    finally:
        builtins.open, os.open = originals
    return counts[0]


def throughput(workdir: Path, items: dict[int, int], batch: int, rounds: int) -> tuple[list[list], dict]:
    rows, raw = [], {}
    for size, count in items.items():
        write = partial(write_photo_crops, size=size, count=count)
        roots = make_once(workdir / f"photos{size}_{count}", write, encodings=("file", "raw"))
        for workers in (0, 2):
            modules = {name: datamodule(root, name, size, batch, workers) for name, root in roots.items()}
            runs = {name: epoch_seconds_per_image(module) for name, module in modules.items()}
            if workers == 0:
                runs |= {
                    f"{name} read only": read_seconds_per_image(module) for name, module in modules.items()
                }
            times = interleaved(runs, rounds)
            opened = {name: files_opened(datamodule(roots[name], name, size, batch, 0)) for name in roots}
            raw[f"{size}px_{workers}w"] = {"times": times, "files_opened": opened}
            for kind in ("", " read only") if workers == 0 else ("",):
                rate = {name: 1 / median(times[name + kind]) for name in roots}
                rows.append(
                    [f"{size} px, {count} images{kind}", workers]
                    + [f"{rate[name]:.0f} ({spread(times[name + kind])})" for name in roots]
                    + [f"**{rate[name] / rate['folders']:.2f}x**" for name in roots if name != "folders"]
                    + [" / ".join(str(opened[name]) for name in roots) if not kind else ""]
                )
                print(rows[-1], load_average(), flush=True)
    return rows, raw


def startup(workdir: Path, sizes: list[int], tiny: int, rounds: int) -> tuple[list[list], dict]:
    rows, raw = [], {}
    for count in sizes:
        start = time.perf_counter()
        roots = make_once(workdir / f"tiny{count}", partial(write_tiny_files, count=count, size=tiny))
        folders, shards = roots["folders"], roots["shards file"]
        made = time.perf_counter() - start

        def build(root: Path, form: str) -> Callable[[], None]:
            def run() -> None:  # returns nothing: the DataModule is freed inside its own timing, not the next
                datamodule(root, form, tiny, 32, 0).train_dataloader()

            return run

        times = interleaved(
            {"folders": build(folders, "folders"), "shards": build(shards, "shards")},
            rounds if count < 1_000_000 else 1,
            warmup=1,
        )
        chunks = len(list((shards / "train").glob("*.bin")))
        raw[count] = {"times": times, "chunks": chunks, "made_s": made}
        rows.append([f"{count:,}", spread(times["folders"]), spread(times["shards"]), chunks])
        print(rows[-1], load_average(), flush=True)
    return rows, raw


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lit_diffsr_bench_shards"
    )
    parser.add_argument("--items", nargs="*", default=["32=4096", "64=2048", "256=384"], metavar="PX=N")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--startup-sizes", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--tiny-size", type=int, default=4, help="side of the start-up test's PNGs")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    items = {int(size): int(count) for size, count in (item.split("=") for item in args.items)}
    if items:
        load_before = load_average()
        speed_rows, speed_raw = throughput(args.workdir, items, args.batch, args.rounds)
        header = ["data", "workers", "folders images/s", "shards (file bytes) images/s"]
        header += ["shards (raw pixels) images/s", "file shards / folders", "raw shards / folders"]
        header += ["files opened: folders / file / raw shards"]
        body = (
            f"Train loader images/s (median of {args.rounds} interleaved epochs, IQR of the seconds per "
            f"image), batch {args.batch}; `read only`: reading and decoding the train set in the sampler's "
            "order, nothing else; files opened in one epoch with 0 workers.\n\n"
            + markdown_table(header, speed_rows)
        )
        results = {"throughput": speed_raw, "args": vars(args) | {"workdir": "-"}}
        write_results("data_shards", "Folders against shards: throughput", body, results, load_before)
    if args.startup_sizes:
        load_before = load_average()
        start_rows, start_raw = startup(args.workdir, args.startup_sizes, args.tiny_size, args.rounds)
        body = (
            "DataModule start-up (train set listed or indexed, sampler and loader built), seconds, "
            f"{args.tiny_size}x{args.tiny_size} PNGs, warm file-system cache; median of {args.rounds} "
            "interleaved rounds (1 at 1 M items) after one untimed round.\n\n"
            + markdown_table(["items", "folders", "shards", "chunk files"], start_rows)
        )
        results = {"startup": start_raw, "args": vars(args) | {"workdir": "-"}}
        write_results("data_shards_startup", "Folders against shards: start-up", body, results, load_before)


if __name__ == "__main__":
    main()
