"""DDRM: training-free restoration with a trained prior of the framework (Kawar et al. 2022).

`validate` / `test` / `predict` only. Every batch's images x are degraded on the fly, y = H x + σ_y z
(Kawar et al. 2022, eq. 1, z seeded per batch), and restored with `ddrm_sample` (eq. 7-8) from the ε of the
prior's network. The metrics compare the restoration and the pseudo-inverse baseline H^+ y with x; the
sample grid (`SampleGrid`) shows rows degraded (H^+ y) | restored | original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lit_diffsr.diffusion import (
    AnisotropicDeblurring,
    Colorization,
    Deblurring,
    Denoising,
    GaussianDiffusion,
    Inpainting,
    SRConv,
    SuperResolution,
    SVDOperator,
    bicubic_kernel,
    ddrm_sample,
    ddrm_timesteps,
    gaussian_kernel,
    uniform_kernel,
)
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, check_options, load_method
from lit_diffsr.methods.classcond import ClassConditionalDiffusion
from lit_diffsr.methods.configs import DDRMSamplerConfig, reject_unknown_keys, settings
from lit_diffsr.metrics.image import fidelity_scores
from lit_diffsr.nets.adm_import import pretrained_hint

# model.operator: the keys of each type, with their defaults. singular_threshold zeroes 1-D singular
# values at or below it (DDRM's released blur / bicubic experiments use 3e-2); 0 keeps H exact.
OPERATORS: dict[str, dict[str, Any]] = {
    "denoise": {},
    "sr_average": {"scale": 4},
    "sr_bicubic": {"scale": 4, "singular_threshold": 0.0},
    "deblur_gaussian": {"std": 2.0, "size": 9, "singular_threshold": 0.0},
    "deblur_uniform": {"size": 9, "singular_threshold": 0.0},
    "deblur_anisotropic": {"std_rows": 1.0, "std_cols": 3.0, "size": 9, "singular_threshold": 0.0},
    "colorize": {},
    "inpaint": {},  # the mask is the batch's "mask" (1 = observed): add a mask step to data.degradation
}


INPAINT_MASK_HINT = (
    "model.operator.type=inpaint needs batch['mask'] (1 = observed): add a mask step to "
    "data.degradation, e.g. [{type: mask, kind: freeform}]"
)


def operator_params(operator: dict) -> tuple[str, dict[str, Any]]:
    """(type, its parameters with defaults) of a `model.operator` dict, or a ConfigError naming the key."""
    spec = dict(operator)
    kind = spec.pop("type", None)
    if kind not in OPERATORS:
        raise ConfigError(f"model.operator.type={kind!r}; use one of {', '.join(OPERATORS)}")
    reject_unknown_keys(spec, OPERATORS[kind], f"model.operator for type {kind!r}")
    return kind, {**OPERATORS[kind], **spec}


def build_operator(
    operator: dict, channels: int, image_size: int, mask: torch.Tensor | None = None
) -> SVDOperator:
    """H with its SVD (Kawar et al. 2022, App. D) for a `model.operator` dict: {"type": one of
    OPERATORS, its keys}; inpainting takes the mask (1 = observed, (H, W) or (C, H, W))."""
    kind, p = operator_params(operator)
    threshold = float(p.get("singular_threshold", 0.0))
    if kind == "colorize" and channels != 3:
        raise ConfigError(
            f"model.operator.type=colorize needs an RGB prior; this one has {channels} channel(s)"
        )
    if kind == "inpaint" and mask is None:
        raise ConfigError(INPAINT_MASK_HINT)
    builders: dict[str, Callable[[], SVDOperator]] = {
        "denoise": lambda: Denoising(channels, image_size),
        "sr_average": lambda: SuperResolution(channels, image_size, int(p["scale"])),
        "sr_bicubic": lambda: SRConv(
            bicubic_kernel(int(p["scale"])), channels, image_size, int(p["scale"]), threshold
        ),
        "deblur_gaussian": lambda: Deblurring(
            gaussian_kernel(p["std"], p["size"]), channels, image_size, threshold
        ),
        "deblur_uniform": lambda: Deblurring(uniform_kernel(p["size"]), channels, image_size, threshold),
        "deblur_anisotropic": lambda: AnisotropicDeblurring(
            gaussian_kernel(p["std_rows"], p["size"]),
            gaussian_kernel(p["std_cols"], p["size"]),
            channels,
            image_size,
            threshold,
        ),
        "colorize": lambda: Colorization(image_size),
        "inpaint": lambda: Inpainting(channels, image_size, mask=mask),
    }
    try:
        return builders[kind]()
    except ValueError as error:  # e.g. a scale that does not divide the image size
        raise ConfigError(f"model.operator={operator}: {error}") from error


class Restoration(NamedTuple):
    """DDRM's output x̂ (not clamped) and the pseudo-inverse baseline H^+ y, both (B, C, H, W)."""

    restored: torch.Tensor
    pseudo_inverse: torch.Tensor


class DDRMRestoration(DiffusionMethod):
    """Restores y = H x + σ_y z with the prior saved at `prior_ckpt` (Kawar et al. 2022).

    Args:
        prior_ckpt: checkpoint of any trained method whose `diffusion.process` is a GaussianDiffusion
            and whose net is unconditional or class-conditional (ε, x_0 or v prediction, any variance),
            e.g. a published one made by `python -m lit_diffsr convert`, or a diffusers UNet2DModel folder.
        operator: {"type": one of OPERATORS, ...its keys}: which H.
        sigma_y: σ_y, the std of the measurement noise (images in [-1, 1]).
        sampler: steps (network evaluations, skipping uniformly through the prior's T steps), eta (η),
            eta_b (η_b), clip (clamp x_θ to [-1, 1]); defaults 20, 0.85, 1.0 (the paper's) and true (ours:
            the reference code does not clip; images in [-1, 1] make clamping a safe default).
        use_class_labels: pass the batch's "y" to a class-conditional prior; else (or without "y") the
            null class. The labels must be the prior's (the demo data's are the quickstart prior's).
        seed: seeds z and the sampler's noise; batch i of process r uses seed + i · world_size + r.
        net: not used (the network is the prior's); given, e.g. by `debug=smoke`, it is an error.
        prior: an already loaded prior instead of `prior_ckpt` (for tests and scripts).
    """

    def __init__(
        self,
        prior_ckpt: str | None = None,
        operator: dict | None = None,
        sigma_y: float = 0.05,
        sampler: dict | None = None,
        use_class_labels: bool = True,
        seed: int = 0,
        net: Any = None,
        prior: DiffusionMethod | None = None,
    ):
        if net is not None:
            raise ConfigError(
                "DDRM uses the network of model.prior_ckpt and takes no model.net; for a small "
                "run use debug=fast with data.resolution=<the prior's>, not debug=smoke"
            )
        where = f"model.prior_ckpt={prior_ckpt}" if prior is None else f"the prior {type(prior).__name__}"
        prior = load_prior(prior_ckpt) if prior is None else prior
        diffusion = prior_diffusion(prior, where)
        super().__init__(prior.net)
        operator, sampler = as_dict(operator or {"type": "denoise"}), as_dict(sampler)
        self.save_hyperparameters(ignore=["prior", "net"])  # plain containers, as every method
        self.net.requires_grad_(False).eval()
        self.prior_where, self.prior_diffusion = where, diffusion
        self.channels, self.image_size = int(self.net.in_channels), int(self.net.image_size)
        self.num_classes = getattr(self.net, "num_classes", None)
        if sigma_y < 0:
            raise ConfigError(f"model.sigma_y={sigma_y} must be >= 0")
        self.sigma_y, self.use_class_labels, self.seed = float(sigma_y), use_class_labels, int(seed)
        self.sampler = settings(DDRMSamplerConfig, sampler, "sampler")
        self.timesteps = self.skipped_timesteps(self.sampler["steps"])
        self.operator_spec = operator
        kind, _ = operator_params(operator)
        # Every H but inpainting's (its mask comes with each batch) is fixed: built once.
        self.fixed_operator = (
            None if kind == "inpaint" else build_operator(operator, self.channels, self.image_size)
        )

    def skipped_timesteps(self, steps: int | str) -> torch.Tensor:
        """The prior's steps DDRM visits for `steps` network evaluations (uniform skips)."""
        total = self.prior_diffusion.num_timesteps
        try:
            return ddrm_timesteps(total, int(str(steps)))
        except ValueError as error:
            raise ConfigError(
                f"model.sampler.steps={steps!r} must be a whole number of DDRM steps in [1, {total}] "
                "(the prior's T)"
            ) from error

    # -- restoration ---------------------------------------------------------------------------------
    def operators(self, batch: dict) -> Iterator[tuple[torch.Tensor, SVDOperator]]:
        """(indices into the batch, H) pairs: one for all images, or one per distinct inpainting mask."""
        if self.fixed_operator is not None:
            yield torch.arange(len(batch["hr"])), self.fixed_operator
            return
        mask = batch.get("mask")
        if mask is None:
            raise ConfigError(INPAINT_MASK_HINT)
        mask_shape = mask.shape[2:] if mask.shape[1] == 1 else mask.shape[1:]  # (H, W) or (C, H, W)
        masks, group = torch.unique(mask.flatten(1).cpu(), dim=0, return_inverse=True)
        for number, flat_mask in enumerate(masks):
            operator = build_operator(
                self.operator_spec, self.channels, self.image_size, flat_mask.reshape(mask_shape)
            )
            yield (group == number).nonzero().flatten(), operator

    def eps_fn(self, labels: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """ε(x_t, t) from the prior's network, whatever it predicts."""
        diffusion = self.prior_diffusion

        def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            output = self.net(x_t, t, y=labels)
            if diffusion.variance == "learned_range":  # [ε-part, variance interpolation], N&D 2021 eq. 15
                output = output[:, : self.channels]
            if diffusion.prediction == "x0":
                return diffusion.predict_eps_from_x0(x_t, t, output)
            if diffusion.prediction == "v":
                return diffusion.predict_eps_from_v(x_t, t, output)
            return output

        return eps

    def class_labels(self, batch: dict) -> torch.Tensor | None:
        """The prior's labels for the batch: its "y", or the null class; None for an unconditional prior."""
        if self.num_classes is None:
            return None
        labels = batch.get("y") if self.use_class_labels else None
        if labels is None:
            return torch.full((len(batch["hr"]),), self.num_classes, dtype=torch.long, device=self.device)
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ConfigError(
                f"batch labels reach {int(labels.max())} but {self.prior_where} has "
                f"{self.num_classes} classes; set model.use_class_labels=false (null class)"
            )
        return labels.long()

    def check_images(self, images: torch.Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ConfigError(
                f"images of shape {tuple(images.shape[1:])} but {self.prior_where} models "
                f"{expected}: set data.resolution={self.image_size}"
            )

    @torch.no_grad()
    def restore(
        self, batch: Mapping, seed: int, steps: int | str | None = None, options: Mapping | None = None
    ) -> Restoration:
        """Degrade batch["hr"] (y = H x + σ_y z, Kawar et al. 2022 eq. 1) and restore it (eq. 7-8) with
        `steps` network evaluations and `options` (eta, eta_b, clip) over model.sampler."""
        settings = {**self.sampler, **check_options(options, ("eta", "eta_b", "clip"), type(self).__name__)}
        timesteps = self.timesteps if steps is None else self.skipped_timesteps(steps)
        images = batch["hr"]
        self.check_images(images)
        labels = self.class_labels(batch)
        generator = torch.Generator(device=images.device).manual_seed(int(seed))
        restored, pseudo_inverse = torch.empty_like(images), torch.empty_like(images)
        for index, operator in self.operators(batch):
            index = index.to(images.device)
            clean = operator.H(images[index])
            y = clean + self.sigma_y * torch.randn(
                clean.shape, generator=generator, dtype=clean.dtype, device=clean.device
            )
            pseudo_inverse[index] = operator.H_pinv(y).reshape(-1, *operator.input_shape)
            restored[index] = ddrm_sample(
                operator,
                y,
                self.sigma_y,
                self.eps_fn(None if labels is None else labels[index]),
                self.prior_diffusion.alphas_cumprod,
                timesteps,
                eta=settings["eta"],
                eta_b=settings["eta_b"],
                generator=generator,
                clip=settings["clip"],
            )
        return Restoration(restored, pseudo_inverse)

    def batch_seed(self, batch_idx: int) -> int:
        """A distinct seed per batch and process."""
        if self._trainer is None:
            return self.seed + batch_idx
        return self.seed + batch_idx * self.trainer.world_size + self.global_rank

    # -- Lightning ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise ConfigError(
                "DDRM is training-free: run `validate`, `test` or `predict` with "
                "model.prior_ckpt=PATH (train the prior with `fit`, e.g. "
                "experiment=quickstart)"
            )
        resolution = getattr(getattr(self.datamodule, "hparams", None), "resolution", None)
        if resolution is not None and int(resolution) != self.image_size:
            raise ConfigError(
                f"data.resolution={resolution} but {self.prior_where} models "
                f"{self.image_size}x{self.image_size} images: "
                f"set data.resolution={self.image_size}"
            )

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise ConfigError(
            "DDRM has no training loss: it restores with a trained prior (validate / test / predict)"
        )

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """The restoration of condition["hr"] degraded on the fly (labels "y", inpainting "mask"), seeded by
        `seed` (None: model.seed); extras["condition"] is the pseudo-inverse H^+ y, the degraded image at
        full size for the grid. options: eta, eta_b, clip."""
        if stop_step is not None:
            raise ConfigError("DDRM has no stop_step: it restores to x_0")
        restoration = self.restore(condition, self.seed if seed is None else seed, steps, options)
        return SampleOutput(
            restoration.restored.clamp(-1, 1), extras={"condition": restoration.pseudo_inverse.clamp(-1, 1)}
        )

    def evaluation_step(self, stage: str, batch: dict, batch_idx: int) -> dict:
        """Restore every batch; log PSNR / SSIM of DDRM and of the pseudo-inverse baseline H^+ y."""
        output = self.sample(batch, seed=self.batch_seed(batch_idx))
        scores = {}
        for suffix, images in (("", output.images), ("_pinv", output.extras["condition"])):
            measured = fidelity_scores(images, batch["hr"])  # SSIM only where its window fits the image
            scores.update({f"{name}{suffix}": value.mean() for name, value in measured.items()})
        return self.outputs_for_callbacks(stage, SampleOutput(output.images, output.extras, scores))

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        restored = self.sample(batch, seed=self.batch_seed(batch_idx)).images
        return {"samples": restored, "names": list(batch["name"])}


def load_prior(prior_ckpt: str | None) -> DiffusionMethod:
    """The trained prior at `prior_ckpt` (EMA weights), with errors that name model.prior_ckpt."""
    if prior_ckpt in (None, ""):
        raise ConfigError(
            "model.prior_ckpt is not set: pass model.prior_ckpt=PATH, a checkpoint written by "
            "`lit_diffsr fit` (e.g. experiment=quickstart: <run>/checkpoints/last.ckpt)"
        )
    if Path(prior_ckpt).is_dir():  # a diffusers UNet2DModel (or pipeline) folder
        try:
            return ClassConditionalDiffusion.from_diffusers(prior_ckpt)
        except ConfigError as error:
            raise ConfigError(f"model.prior_ckpt: {error}") from error
    if not Path(prior_ckpt).is_file():
        hint = pretrained_hint(prior_ckpt)
        raise ConfigError(
            f"model.prior_ckpt={prior_ckpt}: no such file; "
            + (hint or "pass a checkpoint written by `lit_diffsr fit` (e.g. <run>/checkpoints/last.ckpt), "
               "one made by `lit_diffsr convert`, or a diffusers UNet2DModel folder")
        )
    return load_method(prior_ckpt, what="model.prior_ckpt")


def prior_diffusion(prior: DiffusionMethod, where: str) -> GaussianDiffusion:
    """The prior's training GaussianDiffusion, after checking DDRM can use its network."""
    process = getattr(getattr(prior, "diffusion", None), "process", None)
    net = getattr(prior, "net", None)
    if not isinstance(process, GaussianDiffusion) or net is None:
        raise ConfigError(
            f"{where}: a {type(prior).__name__} is not a Gaussian-diffusion prior; DDRM "
            "needs a method with a net and diffusion.process (e.g. one trained with "
            "experiment=quickstart)"
        )
    for attribute in ("image_size", "in_channels"):
        if getattr(net, attribute, None) is None:
            raise ConfigError(
                f"{where}: the prior's network has no {attribute}; DDRM needs it to check the data"
            )
    if getattr(net, "cond_channels", 0) or getattr(net, "use_aug_level", False):
        raise ConfigError(
            f"{where}: the prior is conditioned on an image (cond_channels="
            f"{getattr(net, 'cond_channels', 0)}); DDRM needs an unconditional or "
            "class-conditional prior"
        )
    return process
