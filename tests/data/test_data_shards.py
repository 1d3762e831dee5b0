"""Shard sets (data.format=shards): the same items as the folders they were written from, exact resume under
two ranks, and one clear error for every kind of bad shard set."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lit_diffsr.data.datamodule import ImageDataModule
from lit_diffsr.data.datasets import RandomSplit
from lit_diffsr.data.io import find_images, load_rgb
from lit_diffsr.data.prepare.cli import main as prepare
from lit_diffsr.data.shards import ShardDataset
from lit_diffsr.errors import ConfigError

CLASSES = ("cat", "dog", "eel")


@pytest.fixture
def class_tree(tmp_path, random_rgb, write_image) -> Path:
    """root/{train,val}/<class>/*.png: 7 and 2 images per class, sizes varying so crops matter."""
    root = tmp_path / "folders"
    for split, count in (("train", 7), ("val", 2)):
        for label, name in enumerate(CLASSES):
            for k in range(count):
                image = random_rgb(20 + k, 24 + 2 * k, seed=100 * label + 10 * k + len(split))
                write_image(root / split / name / f"{name}_{split}_{k}.png", image)
    return root


def write_shards(src: Path, dst: Path, *options: str) -> Path:
    assert prepare(["shards", "--src", str(src), "--dst", str(dst), "--chunk-bytes", "6kB", *options]) == 0
    return dst


def items_by_name(dataset) -> dict[str, dict]:
    return {item["name"]: item for item in (dataset[index] for index in range(len(dataset)))}


def assert_same_items(expected: dict[str, dict], actual: dict[str, dict]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, item in expected.items():
        assert actual[name].keys() == item.keys()
        for key, value in item.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(actual[name][key], value), f"{name}: {key} differs"


@pytest.mark.parametrize("encoding", ["file", "raw"])
def test_class_folders_round_trip_through_shards(class_tree, tmp_path, encoding):
    shards = write_shards(class_tree, tmp_path / "shards", "--encoding", encoding)
    assert len(json.loads((shards / "train" / "index.json").read_text())["chunks"]) > 2  # really sharded
    # Pixels, labels and names of every stored item are those of its file.
    stored = ShardDataset(str(shards / "train"))
    files = {path.stem: path for path in find_images(class_tree / "train")}
    assert stored.classes == list(CLASSES) and len(stored) == len(files) == 21
    for index in range(len(stored)):
        item, pixels, _ = stored._read(int(stored.indices[index]))
        path = files[item["name"]]
        assert np.array_equal(pixels, load_rgb(path)) and CLASSES[item["y"]] == path.parent.name
    # Served items (crops, labels, names) equal the folder DataModule's, val and train alike.
    modules = {
        form: ImageDataModule("folder", root=str(root), resolution=16, format=form, random_flip=False)
        for form, root in (("folders", class_tree), ("shards", shards))
    }
    assert modules["shards"].num_classes == modules["folders"].num_classes == 3
    assert_same_items(*(items_by_name(module.dataset("val")) for module in modules.values()))
    tested = ImageDataModule("folder", root=str(shards), resolution=16, format="shards", test_dir="val")
    assert_same_items(items_by_name(modules["folders"].dataset("val")), items_by_name(tested.dataset("test")))
    folder_train, shard_train = (module.dataset("train") for module in modules.values())
    position = {item["name"]: index for index, item in enumerate(map(shard_train.__getitem__, range(21)))}
    for index in range(len(folder_train)):  # the same item with the same item seed: the same random crop
        expected = folder_train[(index, 1234 + index)]
        actual = shard_train[(position[expected["name"]], 1234 + index)]
        assert torch.equal(actual["hr"], expected["hr"]) and actual["y"] == expected["y"]


def test_paired_and_flat_sets_round_trip_and_read_from_a_file_url(tmp_path, random_rgb, write_image):
    for k in range(5):
        hr = random_rgb(16, 24, seed=k)
        write_image(tmp_path / "hr" / f"{k:04d}.png", hr)
        write_image(tmp_path / "lr" / f"{k:04d}x4.png", hr[::4, ::4])
    shards = write_shards(
        tmp_path / "hr", tmp_path / "pairs", "--layout", "paired", "--lr-src", str(tmp_path / "lr")
    )
    folders = ImageDataModule(
        "paired", hr_root=str(tmp_path / "hr"), lr_root=str(tmp_path / "lr"), resolution=8, random_flip=False
    )
    for root in (
        str(shards),
        f"file://{shards}",
    ):  # file:// goes through litdata's object-store download path
        sharded = ImageDataModule(
            "paired",
            root=root,
            resolution=8,
            format="shards",
            num_val=2,
            random_flip=False,  # a flipped pair moves the stride grid: compare unflipped crops
            shard_cache_dir=str(tmp_path / "cache"),
        )
        assert sharded.lr_scale == folders.lr_scale == 4
        assert len(sharded.dataset("train")) == 3
        items = {**items_by_name(sharded.dataset("train")), **items_by_name(sharded.dataset("val"))}
        folder_items = {**items_by_name(folders.dataset("train")), **items_by_name(folders.dataset("val"))}
        assert sorted(items) == sorted(folder_items)
        for name, item in folder_items.items():
            # Pairs stay aligned: the LR is the HR's every 4th pixel, cropped from the same region.
            assert torch.equal(items[name]["lr"], items[name]["hr"][:, ::4, ::4])
            assert item["hr"].shape == items[name]["hr"].shape == (3, 8, 8)
    usage = ["shards", "--src", str(tmp_path / "hr"), "--dst", str(tmp_path / "x"), "--layout", "paired"]
    assert prepare(usage) == 2  # paired without --lr-src: a usage error, nothing written
    assert not (tmp_path / "x").exists()
    flat = write_shards(tmp_path / "hr", tmp_path / "flat")
    unlabelled = ShardDataset(str(flat), kinds=("images",))
    assert unlabelled.classes is None and "y" not in unlabelled[0] and len(unlabelled) == 5


class FakeTrainer(SimpleNamespace):
    """What the DataModule reads of a Trainer: the world, and the batches processed in the epoch."""

    def __init__(self, rank: int, processed: int):
        progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
        super().__init__(
            world_size=2,
            global_rank=rank,
            fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        )


def test_exact_mid_epoch_resume_under_two_ranks(class_tree, tmp_path):
    shards = write_shards(class_tree, tmp_path / "shards")

    def module(rank: int, processed: int, workers: int = 0) -> ImageDataModule:
        datamodule = ImageDataModule(
            "folder",
            root=str(shards),
            resolution=16,
            batch_size=2,
            format="shards",
            num_workers=workers,
            seed=3,
        )
        datamodule.trainer = FakeTrainer(rank, processed)
        return datamodule

    def epoch(datamodule: ImageDataModule) -> list[dict]:
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(1)
        return list(loader)

    seen = []
    for rank in (0, 1):
        uninterrupted = epoch(module(rank, 0, workers=2 if rank else 0))
        seen += [name for batch in uninterrupted for name in batch["name"]]
        interrupted = module(rank, processed=3)  # preempted after 3 batches of epoch 1 on every rank
        interrupted.train_dataloader().sampler.set_epoch(1)
        resumed = module(rank, 0)
        resumed.load_state_dict(interrupted.state_dict())
        rest = epoch(resumed)
        assert len(rest) == len(uninterrupted) - 3
        for expected, actual in zip(uninterrupted[3:], rest, strict=True):
            assert actual["name"] == expected["name"]
            assert torch.equal(actual["hr"], expected["hr"]) and torch.equal(actual["y"], expected["y"])
    # 21 items on 2 ranks: every item once, plus the one wrapped-around pad DistributedSampler adds.
    assert len(seen) == 22 and len(set(seen)) == 21


def test_training_order_reads_one_chunk_at_a_time(class_tree, tmp_path):
    shards = write_shards(class_tree, tmp_path / "shards")
    datamodule = ImageDataModule("folder", root=str(shards), resolution=16, format="shards")
    dataset = datamodule.dataset("train")
    sampler = datamodule.train_dataloader().sampler
    chunks = [dataset.chunk_file(int(dataset.indices[index])) for index, _ in sampler]
    switches = sum(a != b for a, b in zip(chunks, chunks[1:], strict=False))
    assert switches == len(dataset.chunk_groups) - 1 > 1
    sampler.set_epoch(1)
    assert [index for index, _ in sampler] != [index for index, _ in datamodule.train_dataloader().sampler]
    held_out = ShardDataset(str(shards / "train"), split=RandomSplit("train", num_val=5))
    chunk_of = [held_out.chunk_file(int(index)) for index in held_out.indices]
    runs = [len(list(group)) for _, group in itertools.groupby(chunk_of)]
    assert held_out.chunk_groups == runs and sum(runs) == len(held_out) == 16


def corrupt(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bad_shard_sets_raise_one_clear_error_naming_the_file(class_tree, tmp_path):
    shards = write_shards(class_tree, tmp_path / "shards")
    train = shards / "train"

    def load(root: Path = shards, **options):
        return ImageDataModule("folder", root=str(root), resolution=16, format="shards", **options).dataset(
            "train"
        )

    chunk = train / json.loads((train / "index.json").read_text())["chunks"][0]["filename"]
    corrupt(chunk, 40)  # a flipped byte in the last item's image: its CRC fails
    dataset = load()
    with pytest.raises(ConfigError, match=f"{chunk.name}.*CRC-32.*skip_corrupt"):
        [dataset[index] for index in range(len(dataset))]
    with pytest.warns(UserWarning, match="skipping corrupt shard item"):
        assert load(skip_corrupt=True).num_skipped == 1

    chunk.write_bytes(chunk.read_bytes()[:-100])  # truncated
    with pytest.raises(ConfigError, match=f"shard {chunk}.*truncated"):
        load()
    index = json.loads((train / "index.json").read_text())
    index["lit_diffsr"]["version"] = 99
    (train / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="index.json is shard format version 99"):
        load()
    index["lit_diffsr"]["version"] = 1
    (train / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="holds a 'classes' shard set.*'images'"):
        load(class_folders=False)
    (train / "index.json").unlink()
    with pytest.raises(ConfigError, match="holds no shard set"):
        load()
    shutil.rmtree(shards / "val")
    with pytest.raises(ConfigError, match=r"val/index.json is missing"):
        ShardDataset(str(shards / "val"))
    with pytest.raises(ConfigError, match="data.format='tar' is not one of"):
        ImageDataModule("folder", root=str(shards), format="tar")


def test_an_undecodable_image_packed_into_a_shard_is_named_when_read(tmp_path, random_rgb, write_image):
    for k in range(3):
        write_image(tmp_path / "flat" / f"img{k}.png", random_rgb(16, 16, seed=k))
    broken = tmp_path / "flat" / "img1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: packed as it is, its CRC-32 holds
    shards = write_shards(tmp_path / "flat", tmp_path / "shards")
    dataset = ShardDataset(str(shards))
    with pytest.raises(ConfigError, match=r"cannot read item \d of .*chunk-.*\.bin: .*'img1'"):
        [dataset[index] for index in range(3)]
    with pytest.warns(UserWarning, match="img1"):
        assert ShardDataset(str(shards), skip_corrupt=True).num_skipped == 1
