"""Class-conditional base diffusion: the first stage of a cascade (Ho et al. 2022, CDM §2-3).

A DDPM with learned-range variance trained on L_hybrid (Nichol & Dhariwal 2021, eq. 16), optional
classifier-free guidance (Ho & Salimans 2022: labels dropped to the null class with `label_dropout`,
`guidance_scale` at sampling; 1.0 = off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lit_diffsr.diffusion import drop_labels
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, check_options
from lit_diffsr.methods.sampling import SAMPLER_OPTIONS, Diffusion, label_guided
from lit_diffsr.nets import diffusers_unet


class ClassConditionalDiffusion(DiffusionMethod):
    """`net` is a UNet config (its `num_classes` = `num_classes`); `diffusion` and `sampler` as in
    `lit_diffsr.methods.sampling.Diffusion`; `predict`: num_samples, labels (list or null = random),
    batch_size, seed — what `python -m lit_diffsr predict` generates."""

    def __init__(
        self,
        net: Any,
        diffusion: dict | None = None,
        sampler: dict | None = None,
        num_classes: int | None = None,
        label_dropout: float = 0.0,
        guidance_scale: float = 1.0,
        optim: dict | None = None,
        predict: dict | None = None,
        val_sample_batches: int = 1,
    ):
        super().__init__(net, optim=optim, val_sample_batches=val_sample_batches)
        net, diffusion, sampler, optim, predict = map(as_dict, (net, diffusion, sampler, optim, predict))
        self.save_hyperparameters()  # plain containers: checkpoints load with weights_only=True
        self.diffusion = Diffusion(diffusion, sampler)
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.guidance_scale = guidance_scale
        self.predict_options = {"num_samples": 16, "labels": None, "batch_size": 16, "seed": 0}
        self.predict_options.update(predict)

    @classmethod
    def from_diffusers(cls, folder: str | Path) -> ClassConditionalDiffusion:
        """The model of a diffusers `UNet2DModel` folder (or a pipeline folder: its unet/ and scheduler/),
        read as data (`lit_diffsr.nets.diffusers_unet`); the diffusion is the scheduler's training process."""
        net, state = diffusers_unet.read_unet_folder(folder)
        diffusion = diffusers_unet.diffusion_config(folder, net["learn_sigma"])
        method = cls(net, diffusion, num_classes=net["num_classes"])
        method.net.load_state_dict(state)
        return method

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def setup(self, stage: str) -> None:
        self.check_class_count(self.num_classes)

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        x0, y = batch["hr"], batch.get("y") if self.num_classes else None
        if y is not None and self.training and self.label_dropout > 0:
            y = drop_labels(y, self.null_class, self.label_dropout)
        return self.diffusion.training_losses(lambda x_t, t: self.net(x_t, t, y=y), x0)

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """Images for the labels `condition["y"]` (or as many as `condition["hr"]` holds, unconditional).
        options: guidance_scale, and the sampler's name, eta, clip_denoised."""
        options = check_options(options, ("guidance_scale", *SAMPLER_OPTIONS), type(self).__name__)
        guidance_scale = float(options.pop("guidance_scale", self.guidance_scale))
        count = len(condition["y"] if "y" in condition else condition["hr"])
        y = condition.get("y") if self.num_classes else None
        y = None if y is None else y.to(self.device)
        model_fn = label_guided(
            lambda x, t, labels: self.net(x, t, y=labels), y, self.null_class, guidance_scale
        )
        shape = (count, self.net.in_channels, self.net.image_size, self.net.image_size)
        images = self.diffusion.sample(
            model_fn, shape, self.device, seed, steps=steps, stop_step=stop_step, overrides=options
        )
        return SampleOutput(images)

    # `predict` without a DataModule: batches of class labels (given, or drawn with a fixed seed).
    def predict_dataloader(self):
        options = self.predict_options
        count = int(options["num_samples"])
        generator = torch.Generator().manual_seed(int(options["seed"]))
        if options["labels"] is not None:
            labels = torch.as_tensor(list(options["labels"]), dtype=torch.long).repeat(count)[:count]
        elif self.num_classes:
            labels = torch.randint(self.num_classes, (count,), generator=generator)
        else:
            labels = torch.zeros(count, dtype=torch.long)
        size = int(options["batch_size"])
        batches = []
        for start in range(0, count, size):
            y = labels[start : start + size]
            names = [f"sample{start + i:05d}_class{int(c)}" for i, c in enumerate(y)]
            batches.append({"y": y, "name": names, "seed": int(options["seed"]) + start})
        # batch_size=None: each element already is a batch (labels, names, the seed of its noise).
        return DataLoader(batches, batch_size=None)
