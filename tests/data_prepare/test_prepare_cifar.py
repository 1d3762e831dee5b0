"""CIFAR-10 from the official python batches and from an image tree."""

from __future__ import annotations

import pickle
import shutil

import numpy as np

from lit_diffsr.data.prepare.cifar10 import CLASS_NAMES


def write_batch(path, data: np.ndarray, labels: list[int]) -> None:
    """A batch in the official format: a Python-2 era pickle of a dict with bytes keys."""
    batch = {
        b"batch_label": b"testing batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_python_batches(source, prepare, pixels, tmp_path) -> None:
    rng = np.random.default_rng(0)
    folder = source.root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in CLASS_NAMES]}))
    batches = {}
    for name in [f"data_batch_{n}" for n in range(1, 5)] + ["test_batch"]:
        batches[name] = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), [3, 0, 3]
        write_batch(folder / name, *batches[name])
    (folder / "data_batch_5").write_bytes(b"not a pickle")  # a damaged batch is reported, the rest written
    status, report = prepare("cifar10", "--expect", "train=0-8", "test=0-2")
    dst = tmp_path / "dst"
    assert sorted(p.name for p in (dst / "train/cat").iterdir()) == [
        f"{i:05d}.png" for i in (0, 2, 3, 5, 6, 8, 9, 11)
    ]
    assert sorted(p.name for p in (dst / "test/airplane").iterdir()) == ["00001.png"]
    # Row layout: 1024 red, then green, then blue values, each 32 x 32 row-major.
    data, _ = batches["data_batch_2"]
    red, green, blue = data[1, :1024], data[1, 1024:2048], data[1, 2048:]
    expected = np.stack([red.reshape(32, 32), green.reshape(32, 32), blue.reshape(32, 32)], axis=-1)
    np.testing.assert_array_equal(pixels(dst / "train/airplane/00004.png"), expected)  # batch 2, row 1
    assert [f["source"].rsplit("/", 1)[-1] for f in report["failed_sources"]] == ["data_batch_5"]
    assert status == 1 and report["mismatches"] == [] and report["files_written"] == 15


def test_image_tree(source, prepare, pixels, tmp_path) -> None:
    source.image("train/cat/0001.jpg", 32, 32)
    source.image("train/cat/0002.png", 32, 32, gray=True)
    source.image("train/dog/0003.png", 32, 32)
    source.image("test/dog/0004.jpg", 32, 32)
    status, report = prepare("cifar10", "--expect", "train=1-2", "test=1")
    dst = tmp_path / "dst"
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*.png")) == [
        "test/dog/0004.png",
        "train/cat/0001.png",
        "train/cat/0002.png",
        "train/dog/0003.png",
    ]
    assert pixels(dst / "train/cat/0002.png").shape == (32, 32, 3)
    assert (dst / "train/dog/0003.png").read_bytes() == (source.root / "train/dog/0003.png").read_bytes()
    assert status == 0 and report["files_written"] == 4


def test_default_counts_and_unknown_source(source, prepare, capsys) -> None:
    source.image("train/cat/0001.png", 32, 32)
    status, report = prepare("cifar10")
    assert (
        status == 1
        and f"{report['counts'][0]['folder']}: 1 class folders, expected 10" in report["mismatches"]
    )
    assert any(line.endswith("cat: 1 files, expected 5000") for line in report["mismatches"])
    shutil.rmtree(source.root / "train")
    status, _ = prepare("cifar10")
    assert status == 2 and "neither the CIFAR-10 python batches" in capsys.readouterr().err
