"""ImageDataModule end to end: demo, folder (sub-folders or seeded split), paired, predict,
config errors, and reproducible training order through a real Lightning Trainer."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from lit_diffsr.data.datamodule import ImageDataModule
from lit_diffsr.data.datasets import DatasetLayoutError
from lit_diffsr.data.degradations import downsample, from_uint8, to_uint8
from lit_diffsr.data.samplers import SeededSampler

DEGRADATION = [{"type": "downsample", "scale": 4}, {"type": "mask", "kind": "center", "fraction": 0.5}]


def names_of(loader) -> list[str]:
    return [name for batch in loader for name in batch["name"]]


def test_demo_end_to_end():
    datamodule = ImageDataModule(
        "demo",
        resolution=32,
        batch_size=6,
        degradation=DEGRADATION,
        demo_samples_per_epoch=12,
        demo_crops_per_side=2,
    )
    datamodule.setup("fit")
    assert datamodule.num_classes == 10 and datamodule.lr_scale == 4
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"hr", "lr", "mask", "y", "name"}
    assert batch["hr"].shape == (6, 3, 32, 32) and batch["lr"].shape == (6, 3, 8, 8)
    assert batch["mask"].shape == (6, 1, 8, 8) and batch["y"].dtype == torch.long and len(batch["name"]) == 6
    assert batch["hr"].min() >= -1 and batch["hr"].max() <= 1
    assert len(datamodule.val_dataloader().dataset) == 40  # 10 photos x 2 x 2 crops
    val_names = names_of(datamodule.val_dataloader())
    assert val_names == names_of(datamodule.val_dataloader())  # fixed every epoch
    datamodule.setup("test")
    datamodule.setup("predict")
    test_names = names_of(datamodule.test_dataloader())
    assert len(test_names) == 40 and test_names == names_of(datamodule.test_dataloader())
    assert not torch.equal(
        next(iter(datamodule.test_dataloader()))["hr"], next(iter(datamodule.val_dataloader()))["hr"]
    )
    assert names_of(datamodule.predict_dataloader()) == val_names


def test_folder_with_train_and_val_sub_folders(tmp_path, make_class_folders):
    make_class_folders(("ant", "bee"), per_class=3, root=tmp_path / "train")
    make_class_folders(("ant", "bee"), per_class=1, root=tmp_path / "val")
    make_class_folders(("bee",), per_class=2, root=tmp_path / "test")
    datamodule = ImageDataModule("folder", root=str(tmp_path), resolution=16, batch_size=4, test_dir="test")
    assert datamodule.num_classes == 2 and datamodule.lr_scale is None
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["hr"].shape == (4, 3, 16, 16) and set(batch) == {"hr", "y", "name"}
    assert sorted(names_of(datamodule.val_dataloader())) == ["ant_0", "bee_0"]
    datamodule.setup("test")
    test_batch = next(iter(datamodule.test_dataloader()))
    assert test_batch["y"].tolist() == [1, 1]  # labels follow the training classes


def test_folder_without_sub_folders_is_split_by_seed(make_class_folders):
    root = make_class_folders(("ant", "bee"), per_class=10)
    datamodule = ImageDataModule("folder", root=str(root), resolution=16, batch_size=8, num_val=4, seed=3)
    datamodule.setup("fit")
    train, val = names_of(datamodule.train_dataloader()), names_of(datamodule.val_dataloader())
    assert len(train) == 16 and len(val) == 4 and not set(train) & set(val)
    again = ImageDataModule("folder", root=str(root), resolution=16, num_val=4, seed=3)
    assert names_of(again.val_dataloader()) == val


@pytest.mark.parametrize("problem", ["none", "missing", "empty"])
def test_root_errors_name_the_config_key_and_layout(tmp_path, problem):
    root = {"none": None, "missing": str(tmp_path / "nowhere"), "empty": str(tmp_path)}[problem]
    datamodule = ImageDataModule("folder", root=root)
    with pytest.raises((DatasetLayoutError, ValueError)) as error:
        datamodule.setup("fit")
    assert "data.root" in str(error.value) and "one sub-folder per class" in str(error.value)


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="data.dataset='imagenet'"):
        ImageDataModule("imagenet")
    with pytest.raises(ValueError, match="data.small_image"):
        ImageDataModule("demo", small_image="crop")
    with pytest.raises(ValueError, match="data.resolution=30 is not divisible"):
        ImageDataModule("demo", resolution=30, degradation=[{"type": "downsample", "scale": 4}])
    with pytest.raises(ValueError, match="unknown type 'blurr'"):
        ImageDataModule("demo", degradation=[{"type": "blurr"}])


def test_paired_infers_the_scale_and_serves_aligned_pairs(tmp_path, random_rgb):
    for split, count in (("train", 3), ("val", 1)):
        for k in range(count):
            hr = random_rgb(32, 40, seed=k)
            (tmp_path / "hr" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "lr" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(hr).save(tmp_path / "hr" / split / f"{k:04d}.png")
            lr = to_uint8(downsample(from_uint8(hr), 2, "area"))
            Image.fromarray(lr).save(tmp_path / "lr" / split / f"{k:04d}x2.png")
    datamodule = ImageDataModule(
        "paired", hr_root=str(tmp_path / "hr"), lr_root=str(tmp_path / "lr"), resolution=16, batch_size=3
    )
    assert datamodule.lr_scale == 2 and datamodule.num_classes is None
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["hr"].shape == (3, 3, 16, 16) and batch["lr"].shape == (3, 3, 8, 8)
    assert names_of(datamodule.val_dataloader()) == ["0000"]


def test_predict_dir_serves_whole_images_as_observations(tmp_path, random_rgb, write_image):
    write_image(tmp_path / "inputs" / "a.png", random_rgb(12, 20))
    write_image(tmp_path / "inputs" / "b.jpg", random_rgb(16, 16))
    datamodule = ImageDataModule(
        "demo",
        resolution=32,
        degradation=[{"type": "downsample", "scale": 4}],
        predict_dir=str(tmp_path / "inputs"),
    )
    datamodule.setup("predict")
    batches = list(datamodule.predict_dataloader())
    assert [batch["name"] for batch in batches] == [["a"], ["b"]]
    assert batches[0]["lr"].shape == (1, 3, 12, 20) and "hr" not in batches[0]


def test_train_order_and_crops_follow_seed_and_epoch_not_workers():
    def first_batch(seed: int, epoch: int, workers: int) -> dict:
        datamodule = ImageDataModule(
            "demo", resolution=16, batch_size=8, seed=seed, num_workers=workers, demo_samples_per_epoch=16
        )
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    reference = first_batch(seed=0, epoch=0, workers=0)
    torch.testing.assert_close(first_batch(0, 0, workers=2)["hr"], reference["hr"])  # worker-independent
    assert first_batch(0, 0, 0)["name"] == reference["name"]
    assert first_batch(0, 1, 0)["name"] != reference["name"]  # a new epoch, a new order
    assert first_batch(1, 0, 0)["name"] != reference["name"]


def test_sampler_state_round_trip():
    sampler = SeededSampler(10, seed=5)
    sampler.set_epoch(3)
    restored = SeededSampler(10, seed=0)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler)
    assert sorted(index for index, _ in sampler) == list(range(10))


class RecordBatches(L.LightningModule):
    """Records the names it sees per epoch; one dummy parameter so the optimiser has work."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def on_train_epoch_start(self):
        self.seen.append([])

    def training_step(self, batch, batch_idx):
        self.seen[-1] += batch["name"]
        return (self.weight * batch["hr"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_the_epoch_and_runs_reproduce(tmp_path):
    def fit() -> list[list[str]]:
        model = RecordBatches()
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, ImageDataModule("demo", resolution=16, batch_size=4, demo_samples_per_epoch=8))
        return model.seen

    first = fit()
    assert len(first) == 2 and all(len(epoch) == 8 for epoch in first)
    assert first[0] != first[1]  # Lightning called set_epoch on the sampler
    assert fit() == first


def test_hydra_instantiate_with_a_yaml_degradation():
    # Hydra passes lists and dicts as OmegaConf containers; ranges must still be recognised.
    config = OmegaConf.create(
        """
        _target_: lit_diffsr.data.datamodule.ImageDataModule
        dataset: demo
        resolution: 16
        batch_size: 2
        demo_samples_per_epoch: 4
        degradation:
          - {type: gaussian_blur, sigma: [0.4, 0.6], kernel_size: 3}
          - {type: downsample, scale: 2}
        """
    )
    datamodule = instantiate(config)
    assert datamodule.lr_scale == 2
    item = datamodule.dataset("train")[(0, 1)]
    assert item["lr"].shape == (3, 8, 8)
