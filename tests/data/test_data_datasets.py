"""Datasets: image folders (layouts, formats, corrupt and small files, splits, degradations),
aligned HR/LR pairs, and the bundled demo photographs."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from lit_diffsr.data.datasets import (
    DatasetLayoutError,
    DemoPhotos,
    ImageFolderDataset,
    PairedFolderDataset,
    RandomSplit,
    load_demo_photos,
)
from lit_diffsr.data.degradations import Degradation, downsample, from_uint8, to_uint8
from lit_diffsr.data.io import ImageReadError
from lit_diffsr.data.transforms import CropTransform, SmallImageError


def as_image(chw: torch.Tensor) -> np.ndarray:
    """Item tensor (C, H, W) in [-1, 1] back to a float (H, W, C) array."""
    return chw.permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- image folders


def test_class_folders_give_labels_and_items(make_class_folders):
    root = make_class_folders(("cat", "dog", "eel"), per_class=2)
    dataset = ImageFolderDataset(root, CropTransform(32, train=False))
    assert dataset.classes == ["cat", "dog", "eel"] and dataset.num_classes == 3 and len(dataset) == 6
    item = dataset[4]
    assert set(item) == {"hr", "y", "name"}
    assert item["hr"].shape == (3, 32, 32) and item["hr"].dtype == torch.float32
    assert -1.0 <= item["hr"].min() and item["hr"].max() <= 1.0
    assert item["y"].dtype == torch.long and item["y"].item() == 2 and item["name"] == "eel_0"


def test_flat_folder_has_no_labels_and_auto_detects_it(tmp_path, random_rgb, write_image):
    for k in range(3):
        write_image(tmp_path / f"img{k}.png", random_rgb(20, 20, seed=k))
    write_image(tmp_path / "more" / "nested.png", random_rgb(20, 20))
    with pytest.raises(DatasetLayoutError, match="both at its top level and in sub-folders"):
        ImageFolderDataset(tmp_path, None)
    dataset = ImageFolderDataset(tmp_path, None, class_folders=False)
    assert dataset.classes is None and dataset.num_classes is None and len(dataset) == 4
    assert set(dataset[0]) == {"hr", "name"}
    (tmp_path / "more" / "nested.png").unlink()
    assert ImageFolderDataset(tmp_path, None).num_classes is None  # auto: flat


def test_every_file_format_loads(tmp_path, random_rgb, write_image):
    image = random_rgb(24, 24)
    write_image(tmp_path / "a.png", image)
    write_image(tmp_path / "b.jpg", image)
    write_image(tmp_path / "c.png", image[:, :, 0])  # greyscale
    write_image(tmp_path / "d.png", np.dstack([image, np.full((24, 24), 200, np.uint8)]))  # RGBA
    Image.fromarray(image[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "e.png")  # 16 bit
    write_image(tmp_path / "f.webp", image)
    dataset = ImageFolderDataset(tmp_path, CropTransform(16, train=False), class_folders=False)
    names = [dataset[i]["name"] for i in range(len(dataset))]
    assert names == ["a", "b", "c", "d", "e", "f"]
    assert all(dataset[i]["hr"].shape == (3, 16, 16) for i in range(len(dataset)))
    torch.testing.assert_close(dataset[2]["hr"], dataset[4]["hr"])  # 8-bit and 16-bit greyscale agree


@pytest.mark.parametrize("layout", ["missing", "empty", "empty_class"])
def test_missing_or_empty_folders_raise_naming_folder_and_layout(tmp_path, make_class_folders, layout):
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    if layout == "empty_class":
        make_class_folders(("cat",), root=root)
        (root / "dog").mkdir()
    expected = {"missing": "does not exist", "empty": "contains no images", "empty_class": "dog"}[layout]
    with pytest.raises(DatasetLayoutError, match=expected) as error:
        ImageFolderDataset(root, None)
    assert str(root) in str(error.value) and "one sub-folder per class" in str(error.value)


def test_corrupt_file_raises_or_is_skipped_and_counted(make_class_folders):
    root = make_class_folders(("cat", "dog"), per_class=2)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    dataset = ImageFolderDataset(root, CropTransform(16, train=False))
    broken_index = [path.name for path in dataset.files].index("broken.png")
    with pytest.raises(ImageReadError, match="broken.png"):
        dataset[broken_index]
    with pytest.warns(UserWarning, match="broken.png"):
        skipping = ImageFolderDataset(root, CropTransform(16, train=False), skip_corrupt=True)
    assert skipping.num_skipped == 1 and len(skipping) == 4 and dataset.num_skipped == 0
    assert all(skipping[i]["hr"].shape == (3, 16, 16) for i in range(4))


def test_small_image_is_upscaled_or_rejected(tmp_path, random_rgb, write_image):
    write_image(tmp_path / "tiny.png", random_rgb(10, 12))
    transform = CropTransform(32, train=True, resize=False)
    upscaled = ImageFolderDataset(tmp_path, transform, small_image="upscale")[0]
    assert upscaled["hr"].shape == (3, 32, 32)
    with pytest.raises(SmallImageError, match=r"tiny\.png"):
        ImageFolderDataset(tmp_path, transform, small_image="error")[0]


def test_random_split_is_disjoint_complete_and_seeded(make_class_folders):
    root = make_class_folders(("cat", "dog"), per_class=10)
    train = ImageFolderDataset(root, None, split=RandomSplit("train", val_fraction=0.2, seed=1))
    val = ImageFolderDataset(root, None, split=RandomSplit("val", val_fraction=0.2, seed=1))
    assert len(val) == 4 and len(train) == 16
    assert set(train.files).isdisjoint(val.files) and len(set(train.files) | set(val.files)) == 20
    assert val.files == ImageFolderDataset(root, None, split=RandomSplit("val", 0.2, seed=1)).files
    assert val.files != ImageFolderDataset(root, None, split=RandomSplit("val", 0.2, seed=2)).files
    with pytest.raises(ValueError, match="cannot hold out 20 of 20"):
        ImageFolderDataset(root, None, split=RandomSplit("val", num_val=20))


def test_validation_folder_uses_the_training_class_order(tmp_path, make_class_folders):
    make_class_folders(("ant", "bee", "cat"), per_class=1, root=tmp_path / "train")
    make_class_folders(("cat",), per_class=1, root=tmp_path / "val")
    train = ImageFolderDataset(tmp_path / "train", None)
    val = ImageFolderDataset(tmp_path / "val", None, classes=train.classes)
    assert val[0]["y"].item() == 2 and val.num_classes == 3
    make_class_folders(("dog",), per_class=1, root=tmp_path / "val")
    with pytest.raises(DatasetLayoutError, match="dog"):
        ImageFolderDataset(tmp_path / "val", None, classes=train.classes)


def test_items_are_functions_of_their_key(make_class_folders):
    root = make_class_folders(("cat",), per_class=2, size=(64, 64))
    dataset = ImageFolderDataset(root, CropTransform(24, train=True, resize=False))
    torch.testing.assert_close(dataset[1]["hr"], dataset[1]["hr"])
    torch.testing.assert_close(dataset[(1, 123)]["hr"], dataset[(1, 123)]["hr"])
    crops = {dataset[(1, seed)]["hr"].numpy().tobytes() for seed in range(8)}
    assert len(crops) > 4  # a new seed, a new random crop


def test_degradation_is_applied_to_the_served_crop(make_class_folders):
    root = make_class_folders(("cat",), per_class=1, size=(64, 64))
    steps = [{"type": "downsample", "scale": 4}, {"type": "mask", "kind": "center", "fraction": 0.5}]
    dataset = ImageFolderDataset(root, CropTransform(32, train=True, resize=False), degradation=steps)
    item = dataset[(0, 7)]
    assert item["lr"].shape == (3, 8, 8) and item["mask"].shape == (1, 8, 8)
    expected = downsample(as_image(item["hr"]), 4, "bicubic") * as_image(item["mask"])
    np.testing.assert_allclose(as_image(item["lr"]), expected, atol=1e-6)  # LR comes from this very HR crop
    assert (item["mask"] == 0).sum() == 16


# ---------------------------------------------------------------- paired folders


def write_pair(hr_dir, lr_dir, stem, hr, scale, lr_name=None):
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hr).save(hr_dir / f"{stem}.png")
    lr = to_uint8(downsample(from_uint8(hr), scale, "area"))
    Image.fromarray(lr).save(lr_dir / (lr_name or f"{stem}.png"))


def test_paired_crops_are_aligned_under_flips_and_rotations(tmp_path, random_rgb):
    for k in range(2):
        write_pair(tmp_path / "hr", tmp_path / "lr", f"img{k}", random_rgb(48, 64, seed=k), 4)
    for train in (True, False):
        dataset = PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 4, crop_size=16, train=train)
        for seed in range(10):
            item = dataset[(seed % 2, seed)]
            assert item["hr"].shape == (3, 16, 16) and item["lr"].shape == (3, 4, 4)
            # the LR file is the 4x block mean of the HR file: block means of the HR crop must
            # reproduce the LR crop bit for bit if, and only if, both cover the same region
            hr_crop = from_uint8(to_uint8(as_image(item["hr"])))
            lr_from_hr = to_uint8(downsample(hr_crop, 4, "area"))
            np.testing.assert_array_equal(lr_from_hr, to_uint8(as_image(item["lr"])))
    whole = PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 4, crop_size=None, train=False)[0]
    assert whole["hr"].shape == (3, 48, 64) and whole["lr"].shape == (3, 12, 16) and "y" not in whole


def test_pair_size_mismatch_names_both_files_and_the_scale(tmp_path, random_rgb):
    write_pair(tmp_path / "hr", tmp_path / "lr", "a", random_rgb(32, 32), 4)
    Image.fromarray(random_rgb(9, 8)).save(tmp_path / "lr" / "a.png")
    with pytest.raises(ValueError, match=r"hr/a\.png.*32x32.*lr/a\.png.*9x8.*scale 4"):
        PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 4, crop_size=16, train=True)


def test_div2k_names_and_missing_partner(tmp_path, random_rgb):
    for stem in ("0001", "0002"):
        write_pair(tmp_path / "hr", tmp_path / "lr", stem, random_rgb(32, 32), 2, lr_name=f"{stem}x2.png")
    assert PairedFolderDataset.infer_scale(tmp_path / "hr", tmp_path / "lr") == 2
    dataset = PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 2, crop_size=8, train=False)
    assert [lr.name for _, lr in dataset.pairs] == ["0001x2.png", "0002x2.png"]
    assert dataset[1]["name"] == "0002"
    Image.fromarray(random_rgb(32, 32)).save(tmp_path / "hr" / "0003.png")
    with pytest.raises(DatasetLayoutError, match=r"0003\.png.*0003x2"):
        PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 2, crop_size=8, train=False)
    with pytest.raises(ValueError, match="crop_size 9 must be divisible by the scale 2"):
        PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 2, crop_size=9, train=False)


# ---------------------------------------------------------------- demo photographs


def test_demo_photos_load_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the demo data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    load_demo_photos.cache_clear()
    photos = load_demo_photos(64)
    assert len(photos) == len(DemoPhotos.classes) == 10
    assert all(photo.dtype == np.uint8 and photo.ndim == 3 and min(photo.shape[:2]) == 64 for photo in photos)
    assert all(photo.std() > 10 for photo in photos)  # real pictures, not blank placeholders


def test_demo_items_keys_shapes_and_labels():
    dataset = DemoPhotos("train", 32, samples_per_epoch=20)
    assert len(dataset) == 20 and dataset.num_classes == 10
    items = [dataset[i] for i in range(20)]
    assert all(set(item) == {"hr", "y", "name"} for item in items)
    assert all(item["hr"].shape == (3, 32, 32) and item["hr"].dtype == torch.float32 for item in items)
    assert all(-1 <= item["hr"].min() and item["hr"].max() <= 1 for item in items)
    assert [item["y"].item() for item in items] == [i % 10 for i in range(20)]  # balanced classes
    assert items[3]["name"] == "rocket_0003"
    assert {dataset[(0, seed)]["hr"].numpy().tobytes() for seed in range(6)}.__len__() > 3


def test_demo_eval_crops_are_fixed_and_val_differs_from_test():
    val, again, test = DemoPhotos("val", 32), DemoPhotos("val", 32), DemoPhotos("test", 32)
    assert len(val) == len(test) == 90
    for index in (0, 13, 89):
        torch.testing.assert_close(val[index]["hr"], again[index]["hr"])
        assert val[index]["name"] == again[index]["name"]
    assert val[40]["y"].item() == test[40]["y"].item() == 4
    assert not torch.equal(val[40]["hr"], test[40]["hr"])
    assert len({val[i]["hr"].numpy().tobytes() for i in range(9)}) == 9  # nine different positions


def test_demo_with_degradation():
    degradation = Degradation([{"type": "downsample", "scale": 4}, {"type": "noise", "sigma": 0.05}])
    item = DemoPhotos("val", 32, degradation=degradation)[5]
    assert item["lr"].shape == (3, 8, 8) and "mask" not in item
    torch.testing.assert_close(
        item["lr"], DemoPhotos("val", 32, degradation=degradation)[5]["lr"]
    )  # fixed noise
