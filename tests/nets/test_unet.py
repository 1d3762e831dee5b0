"""Tests of the ADM-style UNet: shapes, conditioning paths, zero-inits, gradients, checkpointing, dtypes."""

import math

import pytest
import torch

from lit_diffsr.nets import UNet
from lit_diffsr.nets.unet import AttentionBlock, GroupNorm, multihead_attention

IMAGE_SIZE = 16
BATCH = 2
NUM_CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors gain nothing from intra-op threads, which thrash when the suite runs beside others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(**overrides) -> UNet:
    """Two levels (16 and 8 px), attention at 8 px: every block type, small enough for the CPU."""
    options = dict(
        image_size=IMAGE_SIZE,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        num_heads=2,
        norm_groups=8,
    )
    options.update(overrides)
    return UNet(**options)


def full_unet(**overrides) -> UNet:
    """Every conditioning input at once."""
    options = dict(num_classes=NUM_CLASSES, cond_channels=3, use_aug_level=True, learn_sigma=True)
    options.update(overrides)
    return tiny_unet(**options)


def perturb_zero_initialised_(model: torch.nn.Module, std: float = 0.1, skip: str = "\0") -> None:
    """Give every all-zero parameter (zero-init convs, GroupNorm biases) random values, except names
    containing ``skip``: a freshly built UNet outputs exactly zero, which would hide most effects."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if skip not in name and not parameter.any():
                parameter.copy_(std * torch.randn(parameter.shape, generator=generator))


def make_inputs(model: UNet, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for whichever conditioning ``model`` expects; y covers a class and the null class."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        "x": torch.randn(BATCH, model.in_channels, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "t": torch.tensor([3, 917]),
    }
    if model.num_classes is not None:
        inputs["y"] = torch.tensor([1, model.null_class])
    if model.cond_channels:
        inputs["cond"] = torch.randn(BATCH, model.cond_channels, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    if model.use_aug_level:
        inputs["aug_level"] = torch.tensor([0.0, 250.0])
    return inputs


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize(
    "conditioning",
    [
        {},
        {"num_classes": NUM_CLASSES},
        {"cond_channels": 3},
        {"use_aug_level": True},
        {"num_classes": NUM_CLASSES, "cond_channels": 6, "use_aug_level": True},
    ],
)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_output_shape_for_every_conditioning(conditioning: dict, learn_sigma: bool) -> None:
    model = tiny_unet(out_channels=3, learn_sigma=learn_sigma, **conditioning)
    output = model(**make_inputs(model))
    expected_channels = 6 if learn_sigma else 3  # [prediction | variance interpolation v]
    assert output.shape == (BATCH, expected_channels, IMAGE_SIZE, IMAGE_SIZE)


def test_untrained_output_is_zero_and_prediction_precedes_variance() -> None:
    model = full_unet()
    assert model(**make_inputs(model)).abs().max() == 0  # zero-initialised output conv
    with torch.no_grad():
        model.out[-1].weight[3:].normal_()  # only the variance half of the output conv
    output = model(**make_inputs(model))
    assert output[:, :3].abs().max() == 0 and output[:, 3:].abs().max() > 0


def test_other_input_sizes_and_resblock_resampling() -> None:
    """SR3-style training on patches: any size divisible by 2**(levels-1) runs, with either resampler."""
    for resblock_updown in (False, True):
        model = tiny_unet(resblock_updown=resblock_updown, channel_mult=(1, 2, 2))
        output = model(torch.randn(1, 3, 24, 12), torch.tensor([7]))
        assert output.shape == (1, 3, 24, 12)


def test_attention_only_at_listed_resolutions() -> None:
    # Encoder level 8 px (1 block) + middle (always) + decoder level 8 px (num_res_blocks + 1 = 2 blocks).
    assert sum(isinstance(m, AttentionBlock) for m in tiny_unet().modules()) == 4
    # Attention at 16 px as well adds 1 encoder + 2 decoder blocks.
    model = tiny_unet(attention_resolutions=(16, 8))
    assert sum(isinstance(m, AttentionBlock) for m in model.modules()) == 7


def test_num_head_channels_overrides_num_heads() -> None:
    model = tiny_unet(num_heads=4, num_head_channels=8)
    heads = {m.num_heads for m in model.modules() if isinstance(m, AttentionBlock)}
    assert heads == {32 // 8}  # all attention is at 8 px, where the width is 16 * 2 = 32


def test_attention_matches_explicit_multi_head_softmax() -> None:
    """The head split of the fused qkv projection: channels [q | k | v], head h owns channels h*d:(h+1)*d."""
    torch.manual_seed(0)
    channels, heads, head_dim = 8, 2, 4
    block = AttentionBlock(channels, heads, norm_groups=2)
    perturb_zero_initialised_(block)
    x = torch.randn(2, channels, 3, 5)

    qkv = block.qkv(block.norm(x)).flatten(2)  # (B, 3C, N)
    query, key, value = qkv.chunk(3, dim=1)
    outputs = []
    for h in range(heads):
        q, k, v = (tensor[:, h * head_dim : (h + 1) * head_dim] for tensor in (query, key, value))
        weights = torch.softmax(torch.einsum("bdn,bdm->bnm", q, k) / math.sqrt(head_dim), dim=-1)  # eq. 1
        outputs.append(torch.einsum("bnm,bdm->bdn", weights, v))
    expected = x + block.proj_out(torch.cat(outputs, dim=1).reshape_as(x))
    # float32 round-off only: both sides compute the same sums in a different order.
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [{}, {"use_scale_shift_norm": False, "resblock_updown": True, "num_head_channels": 8}],
)
def test_gradients_reach_every_parameter(options: dict) -> None:
    torch.manual_seed(0)
    model = full_unet(**options)
    perturb_zero_initialised_(model)
    output = model(**make_inputs(model))
    (output * torch.randn_like(output)).sum().backward()
    without_gradient = [
        name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert without_gradient == []


def test_float_timesteps_are_continuous() -> None:
    """SR3 embeds a continuous noise level: float t equals long t on integers and varies in between."""
    model = tiny_unet()
    perturb_zero_initialised_(model)
    x = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    integer = model(x, torch.tensor([3, 917]))
    torch.testing.assert_close(model(x, torch.tensor([3.0, 917.0])), integer, rtol=0, atol=0)
    assert not torch.allclose(model(x, torch.tensor([3.5, 917.0])), integer)


def test_class_conditioning_and_null_class() -> None:
    model = full_unet()
    perturb_zero_initialised_(model)
    inputs = make_inputs(model)
    outputs = {}
    for label in (0, 1, model.null_class):
        inputs["y"] = torch.full((BATCH,), label)
        outputs[label] = model(**inputs)
        assert torch.isfinite(outputs[label]).all()
    assert model.null_class == NUM_CLASSES and model.label_embed.num_embeddings == NUM_CLASSES + 1
    assert relative_difference(outputs[0], outputs[1]) > 1e-3
    assert relative_difference(outputs[model.null_class], outputs[0]) > 1e-3


def test_cond_is_concatenated_after_x() -> None:
    """The input conv sees cat([x, cond]): zeroing its cond columns must make the output ignore cond."""
    model = tiny_unet(cond_channels=2)
    perturb_zero_initialised_(model)
    inputs = make_inputs(model)
    other_cond = dict(inputs, cond=torch.randn_like(inputs["cond"]))
    assert relative_difference(model(**inputs), model(**other_cond)) > 1e-3
    with torch.no_grad():
        model.input_blocks[0][0].weight[:, model.in_channels :] = 0
    torch.testing.assert_close(model(**inputs), model(**other_cond), rtol=0, atol=0)


def test_aug_level_is_neutral_until_trained() -> None:
    model = tiny_unet(use_aug_level=True)
    perturb_zero_initialised_(model, skip="aug_embed")
    inputs = make_inputs(model)
    other_level = dict(inputs, aug_level=torch.tensor([500.0, 10.0]))
    # Zero last layer: the level adds exactly zero to the embedding, whatever its value.
    torch.testing.assert_close(model(**inputs), model(**other_level), rtol=0, atol=0)
    with torch.no_grad():
        model.aug_embed[-1].weight.normal_(std=0.1)
    assert relative_difference(model(**inputs), model(**other_level)) > 1e-3


def count_saved_tensors(model: UNet, inputs: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor]:
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(**inputs)
    return saved, output


def test_checkpointing_gives_the_same_gradients_and_saves_fewer_tensors() -> None:
    torch.manual_seed(0)
    plain = full_unet(dropout=0.2, resblock_updown=True)
    perturb_zero_initialised_(plain)
    checkpointed = full_unet(dropout=0.2, resblock_updown=True, use_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    inputs = make_inputs(plain)
    weights = torch.randn(BATCH, 6, IMAGE_SIZE, IMAGE_SIZE)

    saved_counts, gradients = [], []
    for model in (plain, checkpointed):
        torch.manual_seed(7)  # same dropout masks; the recomputation restores the RNG state
        saved, output = count_saved_tensors(model, inputs)
        (output * weights).sum().backward()
        saved_counts.append(saved)
        gradients.append({name: p.grad for name, p in model.named_parameters()})

    assert saved_counts[1] < saved_counts[0] / 2  # block activations are recomputed, not stored
    for name, gradient in gradients[0].items():
        # Recomputation repeats the same float32 operations: equal up to summation-order round-off.
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-6, msg=name)


def channels_last_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image inputs (x, cond) in channels_last memory order; t, y and aug_level as they are."""
    return {key: value.to(memory_format=torch.channels_last) if value.ndim == 4 else value
            for key, value in inputs.items()}


def test_channels_last_and_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = full_unet()
    perturb_zero_initialised_(model)
    inputs = make_inputs(model)
    reference = model(**inputs)

    model_channels_last = model.to(memory_format=torch.channels_last)
    output = model_channels_last(**channels_last_inputs(inputs))
    assert output.shape == reference.shape
    # Same float32 maths in another memory layout; only summation order may change.
    torch.testing.assert_close(output, reference, rtol=1e-4, atol=1e-5)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs)
    assert output.shape == reference.shape and torch.isfinite(output).all()
    # bf16 keeps 8 mantissa bits (relative rounding 2**-9 ~ 0.2% per op); through ~30 layers the errors
    # add up to a few percent (measured: 1.6%). 5% still catches a wrong path (e.g. a dropped residual).
    assert relative_difference(output, reference) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_on_channels_last_matches_and_keeps_the_layout(dtype: torch.dtype) -> None:
    """In bf16 the CPU detour through NCHW changes neither values nor gradients (float32 takes no detour),
    and hands back channels_last tensors (output and input gradient), so the convolutions around it stay
    in their fast layout."""
    torch.manual_seed(0)
    norm, reference_norm = GroupNorm(4, 16), torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        for parameter in (*norm.parameters(), *reference_norm.parameters()):
            parameter.copy_(torch.linspace(-1, 2, 16))
    x = torch.randn(2, 16, 5, 6, dtype=dtype)
    x_channels_last = x.to(memory_format=torch.channels_last).requires_grad_()
    reference_layout = torch.contiguous_format if dtype == torch.bfloat16 else torch.channels_last
    x_reference = x.contiguous(memory_format=reference_layout).requires_grad_()
    output, reference = norm(x_channels_last), reference_norm(x_reference)
    assert output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()
    gradient = torch.randn(output.shape, dtype=dtype)
    output.backward(gradient)
    reference.backward(gradient)
    assert x_channels_last.grad.is_contiguous(memory_format=torch.channels_last)
    # The same kernel on the same numbers: the layout copies are exact, and float32 is nn.GroupNorm's.
    torch.testing.assert_close(output, reference, rtol=0, atol=0)
    torch.testing.assert_close(x_channels_last.grad, x_reference.grad, rtol=0, atol=0)
    torch.testing.assert_close(norm.weight.grad, reference_norm.weight.grad, rtol=0, atol=0)


def test_bf16_attention_on_cpu_is_as_accurate_as_the_fused_kernel() -> None:
    """The CPU bf16 matmul path against float32 attention: bf16 rounding only (measured 0.6% for values
    and gradients; the fused kernel's bf16 values are 0.35% off), far from any wrong formula."""
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 2, 64, 8, requires_grad=True) for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(query, key, value)
    gradient = torch.randn(reference.shape)
    reference.backward(gradient)
    half = [tensor.detach().bfloat16().requires_grad_() for tensor in (query, key, value)]
    output = multihead_attention(*half)
    output.backward(gradient.bfloat16())
    assert output.dtype == torch.bfloat16
    assert relative_difference(output, reference) < 0.015
    for low, exact in zip(half, (query, key, value), strict=True):
        assert relative_difference(low.grad, exact.grad) < 0.015
    # The tolerance separates formulas: attention with a wrong scale (1/d, not 1/sqrt(d)) is 85% away.
    wrong_scale = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=1 / 8)
    assert relative_difference(output, wrong_scale) > 0.1


def test_channels_last_bf16_training_step_matches_float32() -> None:
    """The fast CPU setting (channels_last, bf16 autocast) against plain float32: parameter gradients
    agree up to bf16 rounding, and every gradient comes back in its parameter's layout."""
    torch.manual_seed(0)
    model = full_unet()
    perturb_zero_initialised_(model)
    inputs = make_inputs(model)
    output = model(**inputs)
    gradient = torch.randn(output.shape)
    output.backward(gradient)
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**channels_last_inputs(inputs))
    output.float().backward(gradient)
    grads = {name: p.grad for name, p in model.named_parameters()}
    all_grads, all_reference = (torch.cat([g.flatten() for g in d.values()]) for d in (grads, reference))
    # Over all parameters at once: bf16 rounding through ~30 layers (measured 3.0%, and 3.1% with the fused
    # attention kernel in place of the CPU matmul path), not a wrong gradient.
    assert relative_difference(all_grads, all_reference) < 0.06
    for name, parameter in model.named_parameters():
        assert grads[name].stride() == parameter.stride(), name


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"image_size": 18, "channel_mult": (1, 2, 2)}, "image_size=18 must be divisible by"),
        ({"attention_resolutions": (5,)}, r"attention_resolutions \[5\] never occur"),
        ({"model_channels": 12}, "divisible by norm_groups"),
        ({"num_head_channels": 5}, "num_head_channels=5"),
        ({"num_heads": 3}, "num_heads=3"),
        ({"channel_mult": ()}, "channel_mult"),
    ],
)
def test_bad_configuration_is_rejected(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_unet(**options)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x": torch.zeros(BATCH, 4, IMAGE_SIZE, IMAGE_SIZE)}, r"x must be \(B, 3, H, W\)"),
        ({"x": torch.zeros(BATCH, 3, 9, 9)}, "size 9x9 must be divisible by 2"),
        ({"t": torch.zeros(BATCH, 1)}, r"t must be \(B,\)"),
        ({"y": None}, "y is required"),
        ({"y": torch.zeros(BATCH, 1, dtype=torch.long)}, r"y must be \(B,\)"),
        ({"cond": None}, "cond .* is required"),
        ({"cond": torch.zeros(BATCH, 3, 8, 8)}, "cond must be"),
        ({"aug_level": None}, "aug_level must be"),
    ],
)
def test_bad_input_is_rejected(change: dict, match: str) -> None:
    model = full_unet()
    with pytest.raises(ValueError, match=match):
        model(**dict(make_inputs(model), **change))


def test_unexpected_conditioning_is_rejected() -> None:
    model = tiny_unet()
    inputs = make_inputs(model)
    for extra, match in [
        ("y", "num_classes=None"),
        ("cond", "cond_channels=0"),
        ("aug_level", "use_aug_level"),
    ]:
        value = torch.zeros(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE) if extra == "cond" else torch.zeros(BATCH)
        with pytest.raises(ValueError, match=match):
            model(**inputs, **{extra: value})
    assert model.null_class is None


@pytest.mark.parametrize(
    ("config", "paper_millions"),
    [
        # ADM ImageNet 64x64 (Dhariwal & Nichol 2021, App. hyper-parameter table): 296M parameters.
        # Counted here: 295,905,222 (including one extra label row, the null class: 4 * 192 = 768).
        (dict(image_size=64, model_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3), 296),
        # ADM ImageNet 256x256, class-conditional: 554M parameters. Counted here: 553,839,110.
        (dict(image_size=256, model_channels=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2), 554),
    ],
)
def test_reference_configuration_parameter_count(config: dict, paper_millions: int) -> None:
    adm = dict(attention_resolutions=(32, 16, 8), num_head_channels=64, resblock_updown=True)
    with torch.device("meta"):  # no memory, no initialisation: only shapes
        model = UNet(num_classes=1000, learn_sigma=True, **adm, **config)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6) == paper_millions


def test_timestep_scale_and_stem_channels():
    """timestep_scale embeds s * t (improved-diffusion's rescale_timesteps); stem_channels sets the first
    conv's width (guided-diffusion's int(model_channels * channel_mult[0]), e.g. 0.5 at 512 px)."""
    options = {"image_size": 8, "model_channels": 8, "channel_mult": (0.5, 1), "num_res_blocks": 1,
               "attention_resolutions": (4,), "num_heads": 1, "norm_groups": 4, "stem_channels": 4}
    torch.manual_seed(0)
    scaled = UNet(**options, timestep_scale=0.25)
    with torch.no_grad():  # no zero-initialised layer, so that t reaches the output
        for parameter in scaled.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    plain = UNet(**options)
    plain.load_state_dict(scaled.state_dict())
    assert scaled.input_blocks[0][0].out_channels == 4 and scaled.input_blocks[1][0].in_conv.out_channels == 4
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([8, 400])
    torch.testing.assert_close(scaled(x, t), plain(x, t.float() * 0.25))
    assert not torch.allclose(scaled(x, t), plain(x, t))
