"""The first stage of latent diffusion: a KL-regularised convolutional autoencoder and a patch discriminator.

`AutoencoderKL` (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", §3 and
App. G): an encoder E maps an image x (B, 3, H, W) to a diagonal Gaussian q(z | x) over latents
(B, latent_channels, H/f, W/f), f = 2 ** (len(channel_mult) - 1); a decoder D maps z back to pixels.
`PatchDiscriminator` (Isola et al. 2017, pix2pix §3.2.2) scores overlapping patches as real or fake for the
optional adversarial term of the autoencoder loss (Esser et al. 2021, VQGAN §3.1). `FrozenAutoencoder` wraps a
trained `AutoencoderKL` for the diffusion stage of latent diffusion (scaled latents in, images out).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from lit_diffsr.nets.unet import AttentionBlock, Downsample, Upsample


class ResnetBlock(nn.Module):
    """``out = skip(x) + Conv(Dropout(SiLU(GN(Conv(SiLU(GN(x)))))))``: the UNet's residual block without the
    time embedding (He et al. 2016, pre-activation form; LDM App. G)."""

    def __init__(self, channels: int, out_channels: int, norm_groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(norm_groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
            nn.GroupNorm(norm_groups, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.layers(x)


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))), the encoder's posterior (Kingma & Welling 2014, §2.4)."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        # Bounds keep exp(logvar) finite early in training (LDM App. G does the same).
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I): reparameterisation (Kingma & Welling 2014, eq. 10)."""
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z | x) || N(0, I)) per image, summed over latent elements (Kingma & Welling 2014, App. B)."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class AutoencoderKL(nn.Module):
    """KL-regularised autoencoder, f = 2 ** (len(channel_mult) - 1) (LDM §3, "KL-reg."; App. G).

    Args:
        image_size: training crop size; places attention (``attention_resolutions`` in pixels at this size,
            as the UNet). Any input divisible by f works.
        in_channels, out_channels: image channels.
        latent_channels: channels c of the latent z (B, c, H/f, W/f).
        model_channels: width of the first level; level i has ``model_channels * channel_mult[i]``.
        channel_mult: width multiplier per level; one 2x down/upsampling between levels.
        num_res_blocks: residual blocks per encoder level (the decoder has one more, as LDM).
        attention_resolutions: resolutions (pixels) with self-attention after each residual block;
            the middle of encoder and decoder always has one attention block (LDM App. G).
        num_heads, num_head_channels: heads of those attention blocks (``num_head_channels`` > 0 wins).
        norm_groups: GroupNorm groups; every width must be divisible by it.
        dropout: dropout inside the residual blocks.

    Buffer ``latent_scale``: the factor s with which diffusion sees s * z, 1 / std of training latents
    (LDM §4.3.2 and App. G "rescale the latent"); 0 until estimated. Saved in the state_dict, so a
    frozen autoencoder loaded by path carries it.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 3,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        num_heads: int = 1,
        num_head_channels: int = -1,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not channel_mult:
            raise ValueError("AutoencoderKL: channel_mult must list at least one level, e.g. (1, 2, 4)")
        self.downsampling_factor = 2 ** (len(channel_mult) - 1)
        resolutions = [image_size // 2**level for level in range(len(channel_mult))]
        if image_size % self.downsampling_factor:
            raise ValueError(
                f"AutoencoderKL: image_size={image_size} must be divisible by f={self.downsampling_factor}"
            )
        missing = [r for r in attention_resolutions if r not in resolutions]
        if missing:
            raise ValueError(
                f"AutoencoderKL: attention_resolutions {missing} never occur; resolutions: {resolutions}"
            )
        widths = [model_channels * mult for mult in channel_mult]
        if any(width % norm_groups for width in widths):
            raise ValueError(
                f"AutoencoderKL: widths {widths} must all be divisible by norm_groups={norm_groups}"
            )
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.register_buffer("latent_scale", torch.zeros(()))

        def attention(channels: int) -> AttentionBlock:
            heads = channels // num_head_channels if num_head_channels > 0 else num_heads
            if heads <= 0 or channels % heads:
                raise ValueError(
                    f"AutoencoderKL: {channels} channels do not split into heads of num_heads={num_heads} / "
                    f"num_head_channels={num_head_channels}"
                )
            return AttentionBlock(channels, heads, norm_groups)

        def level_blocks(channels: int, out: int, count: int, resolution: int) -> tuple[list[nn.Module], int]:
            blocks: list[nn.Module] = []
            for _ in range(count):
                blocks.append(ResnetBlock(channels, out, norm_groups, dropout))
                channels = out
                if resolution in attention_resolutions:
                    blocks.append(attention(channels))
            return blocks, channels

        def middle(channels: int) -> list[nn.Module]:
            return [
                ResnetBlock(channels, channels, norm_groups, dropout),
                attention(channels),
                ResnetBlock(channels, channels, norm_groups, dropout),
            ]

        def output(channels: int, out: int) -> list[nn.Module]:
            return [nn.GroupNorm(norm_groups, channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1)]

        # Encoder: conv, levels of residual blocks with a downsampling between them, middle, moments.
        encoder: list[nn.Module] = [nn.Conv2d(in_channels, model_channels, 3, padding=1)]
        channels = model_channels
        for level, (width, resolution) in enumerate(zip(widths, resolutions, strict=True)):
            blocks, channels = level_blocks(channels, width, num_res_blocks, resolution)
            encoder += blocks
            if level != len(widths) - 1:
                encoder.append(Downsample(channels, use_conv=True))
        # 2c outputs: the mean and log-variance of q(z | x).
        encoder += middle(channels) + output(channels, 2 * latent_channels)
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, channels, 3, padding=1), *middle(channels)]
        for level in reversed(range(len(widths))):
            blocks, channels = level_blocks(channels, widths[level], num_res_blocks + 1, resolutions[level])
            decoder += blocks
            if level != 0:
                decoder.append(Upsample(channels, use_conv=True))
        decoder += output(channels, out_channels)
        self.decoder = nn.Sequential(*decoder)

    @property
    def last_decoder_weight(self) -> torch.Tensor:
        """Weight of the decoder's last layer, where VQGAN's adaptive GAN weight compares gradients."""
        return self.decoder[-1].weight

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z | x) for images x (B, in_channels, H, W), H and W divisible by f."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AutoencoderKL: x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.downsampling_factor or x.shape[-1] % self.downsampling_factor:
            raise ValueError(
                f"AutoencoderKL: image size {tuple(x.shape[-2:])} must be divisible by "
                f"f={self.downsampling_factor}; crop or pad the input"
            )
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D(z): images (B, out_channels, f h, f w) from latents (B, latent_channels, h, w)."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"AutoencoderKL: z must be (B, {self.latent_channels}, h, w), got {tuple(z.shape)}"
            )
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruction D(z), z ~ q(z | x) (or its mean), and the posterior q(z | x)."""
        posterior = self.encode(x)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode(z), posterior


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, §3.2.2): strided 4x4 convolutions whose output map scores each receptive
    field (70x70 pixels with 3 layers) as real (> 0) or fake (< 0).

    Args:
        in_channels: image channels.
        channels: width of the first layer, doubled per layer up to 8x.
        num_layers: strided layers after the first one.
        norm_groups: GroupNorm groups (pix2pix uses BatchNorm, which is unreliable at the small batches of
            autoencoder training; GroupNorm does not depend on the batch).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3, norm_groups: int = 32):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = channels
        for index in range(1, num_layers + 1):
            out = channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1  # the last layer keeps the resolution (pix2pix)
            groups = min(norm_groups, out)
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1),
                nn.GroupNorm(groups, out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        # 2 ** num_layers down-sampling and three 4x4 padded convs that each shrink the map by one pixel.
        self.num_layers = num_layers
        self.min_size = 2**num_layers * 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"PatchDiscriminator: images of {tuple(x.shape[-2:])} are too small for {self.num_layers} "
                f"strided layers (need >= {self.min_size} px); lower model.discriminator.num_layers"
            )
        return self.layers(x)


def estimate_latent_scale(autoencoder: AutoencoderKL, images: torch.Tensor) -> float:
    """s = 1 / std of the posterior means of `images` (LDM §4.3.2: "from the first batch")."""
    with torch.no_grad():
        return float(1.0 / autoencoder.encode(images).mode().float().std().clamp_min(1e-12))


class FrozenAutoencoder(nn.Module):
    """A trained `AutoencoderKL`, frozen, that maps images to scaled latents s E(x) and back, D(z / s).

    Latents are the posterior means (deterministic conditioning and targets). When the network carries no
    scale yet (s = 0: an untrained network), the first call of `ensure_scale` estimates it once from the
    images it is given; the value then lives in the state_dict of the module that holds this one.
    """

    def __init__(self, net: AutoencoderKL):
        super().__init__()
        self.net = net.requires_grad_(False).eval()
        # Whether the scale is known, held on the host: the device buffer is read once, not every step,
        # and again after a state_dict is loaded (it may carry s = 0).
        self._has_scale = False
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_has_scale", False))

    @property
    def downsampling_factor(self) -> int:
        return self.net.downsampling_factor

    @property
    def latent_channels(self) -> int:
        return self.net.latent_channels

    def train(self, mode: bool = True) -> FrozenAutoencoder:
        return super().train(False)  # frozen: always in eval mode

    def ensure_scale(self, images: torch.Tensor) -> None:
        if self._has_scale:
            return
        if float(self.net.latent_scale) == 0.0:
            scale = estimate_latent_scale(self.net, images)
            warnings.warn(
                f"the autoencoder has no latent scale factor: estimated s = {scale:.4g} from this batch",
                stacklevel=2,
            )
            self.net.latent_scale.fill_(scale)
        self._has_scale = True

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """z = s * mean of q(z | x)."""
        self.ensure_scale(images)
        return self.net.encode(images).mode() * self.net.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """x = D(z / s), clamped to [-1, 1]."""
        return self.net.decode(latents / self.net.latent_scale).clamp(-1.0, 1.0)
