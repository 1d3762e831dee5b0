"""AutoencoderKL and PatchDiscriminator: shapes, the KL's closed form, gradients, and config errors."""

import pytest
import torch

from lit_diffsr.nets.autoencoder import AutoencoderKL, DiagonalGaussian, PatchDiscriminator


def tiny_autoencoder(channel_mult=(1, 2, 4), latent_channels=4, **kwargs) -> AutoencoderKL:
    options = dict(model_channels=8, num_res_blocks=1, norm_groups=4, attention_resolutions=(8,))
    options.update(kwargs)
    return AutoencoderKL(32, latent_channels=latent_channels, channel_mult=channel_mult, **options)


@pytest.mark.parametrize(("channel_mult", "factor"), [((1, 2, 4), 4), ((1, 2, 2, 4), 8)])
def test_encode_decode_shapes(channel_mult, factor):
    torch.manual_seed(0)
    net = tiny_autoencoder(channel_mult)
    x = torch.rand(2, 3, 32, 48) * 2 - 1  # any size divisible by f, not only the training crop
    posterior = net.encode(x)
    assert net.downsampling_factor == factor
    assert posterior.mean.shape == posterior.logvar.shape == (2, 4, 32 // factor, 48 // factor)
    reconstruction, _ = net(x)
    assert reconstruction.shape == x.shape
    assert net.decode(posterior.sample()).shape == x.shape


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    moments = torch.randn(3, 8, 4, 4)
    posterior = DiagonalGaussian(moments)
    q = torch.distributions.Normal(posterior.mean, posterior.std)
    p = torch.distributions.Normal(torch.zeros_like(posterior.mean), torch.ones_like(posterior.std))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=(1, 2, 3))
    # Both evaluate the same closed form in float32: agreement to rounding (1e-4 relative).
    torch.testing.assert_close(posterior.kl(), expected, rtol=1e-4, atol=1e-4)
    standard = DiagonalGaussian(torch.zeros(1, 8, 4, 4))
    assert float(standard.kl()) == 0.0  # q = N(0, I): no divergence


def test_sample_has_posterior_moments():
    mean, log_std = torch.full((1, 1, 64, 64), 0.5), torch.full((1, 1, 64, 64), -1.0)
    posterior = DiagonalGaussian(torch.cat([mean, 2 * log_std], dim=1))
    samples = torch.stack([posterior.sample(torch.Generator().manual_seed(i)) for i in range(16)])
    # 65536 draws: the sample mean / std have standard errors ~0.0015 / 0.001; 0.01 is > 6 of them.
    assert abs(float(samples.mean()) - 0.5) < 0.01
    assert abs(float(samples.std()) - float(torch.tensor(-1.0).exp())) < 0.01
    assert torch.equal(posterior.mode(), mean)


def test_gradients_reach_encoder_and_decoder():
    net = tiny_autoencoder()
    reconstruction, posterior = net(torch.rand(2, 3, 16, 16))
    (reconstruction.square().mean() + posterior.kl().mean()).backward()
    assert net.encoder[0].weight.grad.abs().sum() > 0
    assert net.last_decoder_weight.grad.abs().sum() > 0


def test_latent_scale_is_a_saved_buffer_starting_unknown():
    net = tiny_autoencoder()
    assert float(net.latent_scale) == 0.0
    assert "latent_scale" in net.state_dict()


def test_bad_configs_and_inputs_name_the_problem():
    with pytest.raises(ValueError, match="attention_resolutions"):
        tiny_autoencoder(attention_resolutions=(5,))
    with pytest.raises(ValueError, match="norm_groups"):
        tiny_autoencoder(norm_groups=3)
    net = tiny_autoencoder()
    with pytest.raises(ValueError, match="divisible by f=4"):
        net.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match="z must be"):
        net.decode(torch.zeros(1, 3, 4, 4))


def test_patch_discriminator_scores_patches():
    discriminator = PatchDiscriminator(3, channels=8, num_layers=2, norm_groups=4)
    scores = discriminator(torch.rand(2, 3, 32, 32))
    # Two stride-2 layers (32 -> 8) and two stride-1 4x4 convs (8 -> 7 -> 6): one score per patch.
    assert scores.shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="num_layers"):
        discriminator(torch.rand(1, 3, 8, 8))
