"""ADM-style UNet (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", §3; Nichol & Dhariwal 2021).

One network serves every method of the framework:

- DDPM / improved DDPM: ``model(x_t, t)``; with ``learn_sigma`` the output carries the variance
  interpolation ``v`` next to the prediction (Nichol & Dhariwal 2021, eq. 15).
- class-conditional models (CDM base, classifier-free guidance): ``y`` labels; row ``null_class`` of the
  label table is the unconditional ("null") label (Ho & Salimans 2021, §3.2).
- super-resolution (SR3, CDM, I²SB): the low-res image, upsampled to the output size, is concatenated to
  ``x`` along channels (Saharia et al. 2021, SR3 §2.4); ``t`` may be a float (continuous noise level).
- CDM's conditioning augmentation: the augmentation level gets its own embedding, added to the time
  embedding (Ho et al. 2022, CDM §3.2).
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lit_diffsr.diffusion.embeddings import timestep_embedding


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so that a residual branch starts as the identity (ADM, §3)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def embedding_mlp(model_channels: int, embed_dim: int, zero_last: bool = False) -> nn.Sequential:
    """Sinusoidal features -> Linear -> SiLU -> Linear (the time-embedding MLP of Ho et al. 2020, App. B)."""
    last = nn.Linear(embed_dim, embed_dim)
    return nn.Sequential(
        nn.Linear(model_channels, embed_dim), nn.SiLU(), zero_module(last) if zero_last else last
    )


def run_maybe_checkpointed(
    module: nn.Module, function: Callable[..., torch.Tensor], *args: torch.Tensor
) -> torch.Tensor:
    """Call ``function(*args)``, recomputing its activations in backward when ``module.use_checkpoint``."""
    if module.use_checkpoint and torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False)
    return function(*args)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class GroupNorm(nn.GroupNorm):
    """GroupNorm (Wu & He 2018) that keeps bf16 channels_last inputs fast on CPU.

    PyTorch's CPU GroupNorm on a channels_last bf16 input runs forward + backward 2-2.5x slower than the
    same kernel on an NCHW copy (copies included; benchmarks/results/cpu_kernels.md), while channels_last
    is what makes bf16 convolutions fast. Such inputs are normalised in NCHW and handed back channels_last;
    in float32 the copies cost more than they save, and elsewhere (CUDA) this is plain ``nn.GroupNorm``.
    Parameters and state_dict keys are those of ``nn.GroupNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.bfloat16 and _memory_format(x) == torch.channels_last:
            return super().forward(_ChannelsFirst.apply(x)).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _ChannelsFirst(torch.autograd.Function):
    """``x.contiguous()`` for a channels_last ``x`` whose gradient comes back channels_last: adding it to
    the gradients of x's other uses (all channels_last) then stays a fast same-layout add."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def multihead_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` over (..., positions, d) (Vaswani et al. 2017, eq. 1).

    ``scaled_dot_product_attention`` everywhere but in bfloat16 on CPU: there PyTorch's fused CPU kernel
    (forward + backward) is 1.6-2.2x slower than batched matmuls and a softmax, which AMX CPUs run in
    bfloat16 (benchmarks/results/cpu_kernels.md). The matmul path scales Q and K by d^(-1/4) each before
    their product, as ADM does for half precision, to keep the logits' rounding small.
    """
    if query.device.type != "cpu" or query.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(query, key, value)
    scale = query.shape[-1] ** -0.25
    weights = torch.softmax((query * scale) @ (key * scale).transpose(-1, -2), dim=-1)
    return weights @ value


class Downsample(nn.Module):
    """Halve H and W: a strided 3x3 conv (``use_conv``) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 conv when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding ``e`` (time + class + augmentation level).

    ``h = Conv(SiLU(GN(x)))``, then with scale-shift norm ``h = GN(h) * (1 + y_s) + y_b`` where
    ``(y_s, y_b) = Linear(SiLU(e))`` — AdaGN (Dhariwal & Nichol 2021, §3) — otherwise
    ``h = GN(h + Linear(e))``; ``out = skip(x) + Conv_0(Dropout(SiLU(h)))`` with ``Conv_0`` zero-initialised.
    With ``up`` / ``down`` the block also resamples (BigGAN-style up/down residual blocks, ADM §3).
    """

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        out_channels: int,
        dropout: float,
        use_scale_shift_norm: bool,
        norm_groups: int,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_norm = nn.Sequential(GroupNorm(norm_groups, channels), nn.SiLU())
        if up:
            self.resample = Upsample(channels, use_conv=False)
        elif down:
            self.resample = Downsample(channels, use_conv=False)
        else:
            self.resample = nn.Identity()
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.embed = nn.Sequential(
            nn.SiLU(), nn.Linear(embed_dim, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_norm = GroupNorm(norm_groups, out_channels)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        )
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return run_maybe_checkpointed(self, self._forward, x, embedding)

    def _forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        # Resample after the norm + activation and before the conv, on the skip path too.
        h = self.in_conv(self.resample(self.in_norm(x)))
        x = self.resample(x)
        film = self.embed(embedding)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = film.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift  # AdaGN, Dhariwal & Nichol 2021, §3
        else:
            h = self.out_norm(h + film)
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a zero-initialised output projection.

    ``out = x + W_o softmax(Q K^T / sqrt(d)) V`` per head, Q, K, V from ``GN(x)`` (Vaswani et al. 2017,
    eq. 1); heads of ``num_head_channels`` channels each, or ``num_heads`` heads (ADM §3).
    """

    def __init__(self, channels: int, num_heads: int, norm_groups: int, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm(norm_groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_maybe_checkpointed(self, self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # (B, 3C, H, W) -> 3 x (B, heads, H*W, C/heads)
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.num_heads, channels // self.num_heads, -1)
        # Contiguous (..., H*W, C/heads) blocks: SDPA's fused CPU kernel needs them, else it falls back to
        # the slower math path, and the matmul path's backward then needs no copies (benchmarks/README.md).
        query, key, value = qkv.transpose(-1, -2).contiguous().unbind(dim=1)
        attended = multihead_attention(query, key, value)
        attended = attended.transpose(-1, -2).reshape(batch, channels, height, width)
        return x + self.proj_out(attended.contiguous(memory_format=_memory_format(x)))


class EmbeddingSequential(nn.Sequential):
    """A sequence of layers; residual blocks also receive the embedding."""

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, embedding) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """ADM UNet (Dhariwal & Nichol 2021, §3) predicting eps / x_0 / v from ``x_t`` and its conditioning.

    Args:
        image_size: training resolution; places attention (``attention_resolutions`` are in pixels at
            this size). Inputs may have another size divisible by ``2 ** (len(channel_mult) - 1)``.
        in_channels: channels of ``x_t`` (without the conditioning image).
        out_channels: channels of the prediction; doubled when ``learn_sigma``.
        model_channels: base width; level ``i`` has ``model_channels * channel_mult[i]`` channels.
        channel_mult: width multiplier per resolution level (one downsampling between levels).
        num_res_blocks: residual blocks per level (the decoder has one more to take the extra skip).
        attention_resolutions: resolutions (pixels) at which self-attention follows each residual block.
        num_heads: attention heads, used when ``num_head_channels == -1``.
        num_head_channels: channels per head (overrides ``num_heads``), -1 to use ``num_heads``.
        dropout: dropout rate inside the residual blocks.
        use_scale_shift_norm: condition with AdaGN ``GN(h)(1 + y_s) + y_b`` instead of adding the embedding.
        resblock_updown: resample with residual blocks (BigGAN style) instead of conv / nearest + conv.
        num_classes: number of classes for class conditioning; ``None`` for an unconditional model.
        cond_channels: channels of the conditioning image concatenated to ``x`` (0 for none).
        use_aug_level: add an embedding of CDM's conditioning-augmentation level.
        learn_sigma: also output the variance interpolation ``v`` (Nichol & Dhariwal 2021, eq. 15).
        use_checkpoint: recompute block activations in backward (saves memory, costs time).
        max_period: longest period of the sinusoidal embeddings of ``t`` and the augmentation level.
        norm_groups: GroupNorm groups; ``model_channels`` must be divisible by it.
        stem_channels: width of the first convolution; None for ``model_channels``. ADM's checkpoints use
            ``int(model_channels * channel_mult[0])`` (their 512x512 model starts at half width).
        timestep_scale: ``t`` is embedded as ``timestep_scale * t``; improved-diffusion's
            ``rescale_timesteps`` models see ``t * 1000 / T`` (Nichol & Dhariwal 2021, code).
        channels_last: keep weights and activations in NHWC memory order (the layout tensor-core
            convolutions want, mainly under bf16; see benchmarks/README.md); outputs are channels_last too.
        compile: compile the forward with ``nn.Module.compile`` (torch.compile in place: the state_dict
            keys and attributes stay those of the plain module, so checkpoints and EMA are unchanged).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        out_channels: int = 3,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        num_heads: int = 4,
        num_head_channels: int = -1,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        num_classes: int | None = None,
        cond_channels: int = 0,
        use_aug_level: bool = False,
        learn_sigma: bool = False,
        use_checkpoint: bool = False,
        max_period: float = 10000,
        norm_groups: int = 32,
        stem_channels: int | None = None,
        timestep_scale: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self._check_config(image_size, channel_mult, attention_resolutions, model_channels, norm_groups)
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.channel_mult = tuple(channel_mult)
        self.num_res_blocks = num_res_blocks
        self.num_classes = num_classes
        # Label of the unconditional ("null") class for classifier-free guidance; None without classes.
        self.null_class = num_classes
        self.cond_channels = cond_channels
        self.use_aug_level = use_aug_level
        self.learn_sigma = learn_sigma
        self.max_period = max_period
        self.timestep_scale = float(timestep_scale)
        self.downsampling_factor = 2 ** (len(channel_mult) - 1)

        embed_dim = 4 * model_channels
        self.time_embed = embedding_mlp(model_channels, embed_dim)
        # Row `num_classes` is the null label for classifier-free guidance (Ho & Salimans 2021, §3.2).
        self.label_embed = nn.Embedding(num_classes + 1, embed_dim) if num_classes is not None else None
        # Zero last layer: an untrained augmentation embedding leaves the network unchanged.
        self.aug_embed = embedding_mlp(model_channels, embed_dim, zero_last=True) if use_aug_level else None

        def res_block(channels: int, out: int, **resample: bool) -> ResBlock:
            block_options = (dropout, use_scale_shift_norm, norm_groups, use_checkpoint)
            return ResBlock(channels, embed_dim, out, *block_options, **resample)

        def downsample(channels: int) -> nn.Module:
            return res_block(channels, channels, down=True) if resblock_updown else Downsample(channels, True)

        def upsample(channels: int) -> nn.Module:
            return res_block(channels, channels, up=True) if resblock_updown else Upsample(channels, True)

        def attention(channels: int) -> AttentionBlock:
            if num_head_channels == -1:
                heads = num_heads
            elif num_head_channels <= 0 or channels % num_head_channels:
                raise ValueError(
                    f"UNet: num_head_channels={num_head_channels} must be -1 or a positive divisor of every "
                    f"attended width (got {channels} channels)"
                )
            else:
                heads = channels // num_head_channels
            if heads <= 0 or channels % heads:
                raise ValueError(f"UNet: num_heads={heads} must be a positive divisor of {channels} channels")
            return AttentionBlock(channels, heads, norm_groups, use_checkpoint)

        # Encoder: skip_channels records the width of every activation handed to the decoder.
        channels = model_channels if stem_channels is None else int(stem_channels)
        self.input_blocks = nn.ModuleList(
            [EmbeddingSequential(nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1))]
        )
        skip_channels = [channels]
        resolution = image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(channels, int(model_channels * mult))]
                channels = int(model_channels * mult)
                if resolution in attention_resolutions:
                    layers.append(attention(channels))
                self.input_blocks.append(EmbeddingSequential(*layers))
                skip_channels.append(channels)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbeddingSequential(downsample(channels)))
                skip_channels.append(channels)
                resolution //= 2

        self.middle_block = EmbeddingSequential(
            res_block(channels, channels), attention(channels), res_block(channels, channels)
        )

        # Decoder: each block consumes one skip; the last block of a level upsamples.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for index in range(num_res_blocks + 1):
                layers = [res_block(channels + skip_channels.pop(), int(model_channels * mult))]
                channels = int(model_channels * mult)
                if resolution in attention_resolutions:
                    layers.append(attention(channels))
                if level != 0 and index == num_res_blocks:
                    layers.append(upsample(channels))
                    resolution *= 2
                self.output_blocks.append(EmbeddingSequential(*layers))

        prediction_channels = 2 * out_channels if learn_sigma else out_channels
        self.out = nn.Sequential(
            GroupNorm(norm_groups, channels),
            nn.SiLU(),
            zero_module(nn.Conv2d(channels, prediction_channels, 3, padding=1)),
        )
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.compile()

    @staticmethod
    def _check_config(
        image_size: int,
        channel_mult: Sequence[int],
        attention_resolutions: Sequence[int],
        model_channels: int,
        norm_groups: int,
    ) -> None:
        if not channel_mult:
            raise ValueError("UNet: channel_mult must list at least one level, e.g. (1, 2, 2, 2)")
        factor = 2 ** (len(channel_mult) - 1)
        if image_size % factor:
            raise ValueError(
                f"UNet: image_size={image_size} must be divisible by 2**(len(channel_mult)-1)={factor}; "
                "change image_size or use fewer levels in channel_mult"
            )
        resolutions = [image_size // 2**level for level in range(len(channel_mult))]
        missing = [r for r in attention_resolutions if r not in resolutions]
        if missing:
            raise ValueError(
                f"UNet: attention_resolutions {missing} never occur; with image_size={image_size} and "
                f"{len(channel_mult)} levels the resolutions are {resolutions}"
            )
        if model_channels % norm_groups:
            raise ValueError(
                f"UNet: model_channels={model_channels} must be divisible by norm_groups={norm_groups}"
            )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        aug_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict from the noisy image ``x`` at time ``t``.

        Args:
            x: (B, in_channels, H, W) noisy image ``x_t``.
            t: (B,) timesteps, long (discrete steps) or float (continuous noise levels, scaled by the method).
            y: (B,) long class labels in ``[0, num_classes]``, ``null_class`` for "no label".
                Required when ``num_classes`` is set.
            cond: (B, cond_channels, H, W) conditioning image (e.g. the upsampled low-res image);
                the network sees ``torch.cat([x, cond], dim=1)``. Required when ``cond_channels > 0``.
            aug_level: (B,) float conditioning-augmentation level (CDM), on the same scale as ``t``.
                Required when ``use_aug_level``.

        Returns:
            (B, out_channels, H, W), or (B, 2 * out_channels, H, W) when ``learn_sigma``:
            ``[prediction | variance interpolation v]`` along channels.
        """
        h = self._network_input(x, cond)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        embedding = self._embedding(x, t, y, aug_level)
        skips = []
        for block in self.input_blocks:
            h = block(h, embedding)
            skips.append(h)
        h = self.middle_block(h, embedding)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), embedding)
        return self.out(h)

    def _network_input(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet: x must be (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.downsampling_factor or width % self.downsampling_factor:
            raise ValueError(
                f"UNet: x's size {height}x{width} must be divisible by {self.downsampling_factor} "
                "(2**(len(channel_mult)-1)); crop or pad the input"
            )
        if self.cond_channels == 0:
            if cond is not None:
                raise ValueError(
                    "UNet: cond was given but cond_channels=0; build the UNet with cond_channels"
                )
            return x
        if cond is None:
            raise ValueError(
                f"UNet: cond (B, {self.cond_channels}, H, W) is required since cond_channels > 0"
            )
        expected = (x.shape[0], self.cond_channels, height, width)
        if tuple(cond.shape) != expected:
            raise ValueError(
                f"UNet: cond must be {expected} to match x {tuple(x.shape)}, got {tuple(cond.shape)}; "
                "upsample the low-res image to x's size first"
            )
        return torch.cat([x, cond], dim=1)

    def _embedding(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, aug_level: torch.Tensor | None
    ) -> torch.Tensor:
        batch = x.shape[0]
        if t.shape != (batch,):
            raise ValueError(f"UNet: t must be (B,) = ({batch},), got shape {tuple(t.shape)}")
        if self.timestep_scale != 1.0:
            t = t * self.timestep_scale
        embedding = self.time_embed(self._sinusoid(t))

        if self.label_embed is None:
            if y is not None:
                raise ValueError("UNet: y was given but num_classes=None; build the UNet with num_classes")
        else:
            if y is None:
                raise ValueError(
                    f"UNet: y is required since num_classes={self.num_classes}; "
                    f"pass y=null_class ({self.null_class}) for unconditional predictions"
                )
            if y.shape != (batch,):
                raise ValueError(
                    f"UNet: y must be (B,) = ({batch},) class labels, got shape {tuple(y.shape)}"
                )
            embedding = embedding + self.label_embed(y)

        if self.aug_embed is None:
            if aug_level is not None:
                raise ValueError("UNet: aug_level was given but use_aug_level=False")
        else:
            if aug_level is None or aug_level.shape != (batch,):
                got = None if aug_level is None else tuple(aug_level.shape)
                raise ValueError(
                    f"UNet: aug_level must be (B,) = ({batch},) since use_aug_level=True, got {got}"
                )
            # Embedded like t, through its own MLP, and added (Ho et al. 2022, CDM §3.2).
            embedding = embedding + self.aug_embed(self._sinusoid(aug_level))
        return embedding

    def _sinusoid(self, values: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of t or the augmentation level, in the dtype of the embedding MLPs."""
        features = timestep_embedding(values, self.model_channels, self.max_period)
        return features.to(self.time_embed[0].weight.dtype)
