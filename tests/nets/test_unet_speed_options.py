"""UNet speed options: channels_last and compile change speed only, never outputs or checkpoints."""

import torch

from lit_diffsr.nets import UNet

torch.set_num_threads(1)

CONFIG = {"image_size": 16, "model_channels": 16, "channel_mult": (1, 2), "attention_resolutions": (8,),
          "norm_groups": 8, "num_heads": 2}


def non_trivial_unet(**options) -> UNet:
    torch.manual_seed(0)
    net = UNet(**CONFIG, **options)
    torch.nn.init.normal_(net.out[2].weight, std=0.1)  # a zero output layer would hide any change
    return net


def test_channels_last_gives_the_same_output_in_nhwc() -> None:
    plain, fast = non_trivial_unet(), non_trivial_unet(channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 700])
    out = fast(x, t)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert fast.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    # float32 convolutions in another memory order round differently: measured max 3e-5.
    torch.testing.assert_close(out, plain(x, t), rtol=1e-3, atol=2e-4)


def test_compile_keeps_the_module_and_its_checkpoint_keys() -> None:
    plain, compiled = non_trivial_unet(), non_trivial_unet(compile=True)
    assert type(compiled) is UNet and compiled._compiled_call_impl is not None
    assert plain._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no "_orig_mod." prefix
