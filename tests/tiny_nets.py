"""Net configs small enough for unit tests (16x16 inputs), shared by the method tests."""

TINY_UNET = {
    "_target_": "lit_diffsr.nets.UNet",
    "image_size": 16,
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [8],
    "num_heads": 1,
    "norm_groups": 4,
}
TINY_AUTOENCODER = {
    "_target_": "lit_diffsr.nets.autoencoder.AutoencoderKL",
    "image_size": 16,
    "latent_channels": 4,
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "norm_groups": 4,
}
