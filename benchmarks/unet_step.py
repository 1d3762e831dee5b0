"""UNet training step (forward + MSE + backward + AdamW step): lit_diffsr against its peers.

Peers at a matched configuration (64 base channels, multipliers 1-2-2, 2 residual blocks per level,
self-attention at 16x16 with 32-channel heads plus the middle block's, scale-shift (AdaGN) time
conditioning, conv down / nearest+conv up, GroupNorm 32, no dropout), same batch and resolution:
- diffusers `UNet2DModel` (the same ADM layout: it matches block for block);
- denoising-diffusion-pytorch `Unet` (fixed layout: 2 blocks per level and an attention layer at every
  level, linear attention where not "full"; we ask for full attention at 16x16 only) — the closest it gets,
  so its parameter count is stated next to its speed.
Timed interleaved (one step of each, in turn), medians over rounds; images/s = batch / median step.
Each net's matmul and convolution FLOPs per step (torch.utils.flop_counter) and a dense GEMM measured in
the same run, in the step's precision, give the rate each net achieves and the ceiling: no implementation
of these FLOPs on these threads runs faster than the GEMM, which bounds the ratio any framework can reach
at this configuration. The flop counter has no formula for PyTorch's fused CPU attention kernel, so
attention done by it is not counted; lit_diffsr's bf16 CPU attention runs as matmuls and is counted
(8 GFLOP a step here).

    python -m benchmarks.unet_step [--batch 16] [--size 32] [--rounds 10] [--threads 2] [--device cpu]
        [--channels-last] [--compile] [--bf16] [--profile]

`--profile` adds where each eager net's step goes (torch.profiler, self time): convolutions (forward and
backward) with the rate they reach, attention, and everything else (norms, activations, optimiser, ...).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    gemm_flops_per_second,
    interleaved,
    load_average,
    markdown_table,
    median,
    spread,
    write_results,
)
from lit_diffsr.nets import UNet

CHANNELS, MULTS, BLOCKS, HEAD_CHANNELS = 64, (1, 2, 2), 2, 32


def lit_unet(size: int, channels_last: bool = False, compile: bool = False) -> torch.nn.Module:
    return UNet(
        image_size=size,
        model_channels=CHANNELS,
        channel_mult=MULTS,
        num_res_blocks=BLOCKS,
        attention_resolutions=(size // 2,),
        num_head_channels=HEAD_CHANNELS,
        dropout=0.0,
        use_scale_shift_norm=True,
        resblock_updown=False,
        channels_last=channels_last,
        compile=compile,
    )


def diffusers_unet(size: int) -> torch.nn.Module:
    from diffusers import UNet2DModel

    net = UNet2DModel(
        sample_size=size,
        block_out_channels=tuple(CHANNELS * m for m in MULTS),
        layers_per_block=BLOCKS,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=HEAD_CHANNELS,
        resnet_time_scale_shift="scale_shift",
        norm_num_groups=32,
    )
    return _OutputSample(net)


def lucidrains_unet(size: int) -> torch.nn.Module:
    from denoising_diffusion_pytorch import Unet

    return Unet(
        dim=CHANNELS,
        dim_mults=MULTS,
        full_attn=(False, True, False),
        attn_heads=4,
        attn_dim_head=HEAD_CHANNELS,
        flash_attn=True,
    )


class _OutputSample(torch.nn.Module):
    """diffusers returns an output dataclass; unwrap `.sample` so every net is net(x, t) -> tensor."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t).sample


def training_step(
    net: torch.nn.Module, batch: int, size: int, device: str, channels_last: bool, bf16: bool
) -> Callable[[], None]:
    """One closure = one optimiser step on a fixed random batch (the data path is benchmarked apart)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=generator).to(device)
    target = torch.randn(batch, 3, size, size, generator=generator).to(device)
    if channels_last:
        x, target = (tensor.contiguous(memory_format=torch.channels_last) for tensor in (x, target))
    t = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    # Fused AdamW for every net, as lit_diffsr's methods use it: the comparison is of the networks.
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    device_type = torch.device(device).type

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.mse_loss(net(x, t).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_flops(step: Callable[[], None]) -> int:
    """Matmul / convolution / attention FLOPs of one call of `step` (forward, backward and all)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# Attention: the fused kernels, or the batched matmuls and softmax of lit_diffsr's CPU bf16 path.
ATTENTION_OPS = ("aten::bmm", "aten::_softmax", "aten::_softmax_backward_data")
CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                   "aten::_slow_conv2d_backward")


def step_profile(step: Callable[[], None], steps: int = 3) -> dict[str, float]:
    """Seconds per step in convolutions, attention kernels and the rest, plus the convolutions' FLOP/s."""
    with FlopCounterMode(display=False) as counter:
        step()
    conv_flops = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    events = profiler.key_averages()
    seconds = {"total": 0.0, "convolution": 0.0, "attention": 0.0}
    for event in events:
        share = event.self_cpu_time_total / 1e6 / steps
        seconds["total"] += share
        if event.key in CONVOLUTION_OPS:
            seconds["convolution"] += share
        elif "scaled_dot_product" in event.key or event.key in ATTENTION_OPS:
            seconds["attention"] += share
    seconds["rest"] = seconds["total"] - seconds["convolution"] - seconds["attention"]
    seconds["convolution_flops_per_second"] = conv_flops / seconds["convolution"]
    return seconds


def profile_table(profiles: dict[str, dict[str, float]], gemm: float) -> str:
    rows = []
    for name, seconds in profiles.items():
        conv_rate = seconds["convolution_flops_per_second"]
        rows.append([
            name,
            f"{seconds['total']:.3f} s",
            f"{seconds['convolution']:.3f} s ({100 * seconds['convolution'] / seconds['total']:.0f}%)",
            f"{conv_rate / 1e9:.0f} ({100 * conv_rate / gemm:.0f}%)",
            f"{seconds['attention']:.3f} s",
            f"{seconds['rest']:.3f} s",
        ])
    header = ["net", "step", "convolutions", "conv GFLOP/s (of GEMM)", "attention", "rest"]
    return markdown_table(header, rows)


def _verdict(ratio: float) -> str:
    return "met" if ratio >= 1.25 else "MISSED"


def parameter_count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--channels-last", action="store_true", help="also time lit_diffsr and diffusers in channels_last"
    )
    parser.add_argument("--compile", action="store_true", help="also time lit_diffsr with torch.compile")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every net")
    parser.add_argument("--profile", action="store_true", help="also break each eager net's step down")
    parser.add_argument("--name", default="unet_step", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()

    torch.manual_seed(0)
    nets = {
        "lit_diffsr UNet": lit_unet(args.size),
        "diffusers UNet2DModel": diffusers_unet(args.size),
        "denoising-diffusion-pytorch Unet": lucidrains_unet(args.size),
    }
    if args.channels_last:
        nets["lit_diffsr UNet, channels_last"] = lit_unet(args.size, channels_last=True)
        nets["diffusers UNet2DModel, channels_last"] = diffusers_unet(args.size).to(
            memory_format=torch.channels_last
        )
    if args.compile:
        nets["lit_diffsr UNet, torch.compile"] = lit_unet(args.size, compile=True)
    steps = {
        name: training_step(
            net.to(args.device).train(),
            args.batch,
            args.size,
            args.device,
            channels_last="channels_last" in name,
            bf16=args.bf16,
        )
        for name, net in nets.items()
    }
    # A net's variants (", channels_last", ", torch.compile") run its FLOPs; count the eager nets only.
    flops = {name: step_flops(steps[name]) for name in nets if "," not in name}
    flops.update({name: flops[name.split(",")[0]] for name in nets if name not in flops})
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    gemm_before = gemm_flops_per_second(args.device, dtype=dtype)
    times = interleaved(steps, args.rounds, warmup=2, synchronize=args.device.startswith("cuda"))
    gemm = max(gemm_before, gemm_flops_per_second(args.device, dtype=dtype))

    medians = {name: median(values) for name, values in times.items()}
    peers = [name for name in nets if not name.startswith("lit_diffsr")]
    fastest_peer = min(peers, key=medians.get)
    rows = [
        [
            name,
            f"{parameter_count(nets[name]) / 1e6:.2f} M",
            f"{flops[name] / 1e9:.1f}",
            spread(times[name]),
            f"{args.batch / medians[name]:.1f}",
            f"{flops[name] / medians[name] / 1e9:.0f} ({100 * flops[name] / medians[name] / gemm:.0f}%)",
            f"{medians[fastest_peer] / medians[name]:.2f}",
        ]
        for name in nets
    ]
    ratio = medians[fastest_peer] / medians["lit_diffsr UNet"]
    best_lit = min((name for name in nets if name.startswith("lit_diffsr")), key=medians.get)
    best_ratio = medians[fastest_peer] / medians[best_lit]
    # lit_diffsr's FLOPs at the GEMM rate: the fastest step any implementation of this configuration can take.
    ceiling = medians[fastest_peer] / (flops["lit_diffsr UNet"] / gemm)
    precision = "bf16 autocast" if args.bf16 else "fp32"
    measured = f"Measured {ratio:.2f}x with the default (eager, NCHW) UNet: {_verdict(ratio)}"
    if best_lit != "lit_diffsr UNet":
        measured += f"; {best_ratio:.2f}x with {best_lit}: {_verdict(best_ratio)}"
    header = [
        "net", "parameters", "GFLOP / step", "median step", "images/s", "GFLOP/s (of GEMM)",
        f"speed vs {fastest_peer}",
    ]
    body = (
        f"Batch {args.batch}, {args.size}x{args.size}, device {args.device}, {precision}, "
        f"{args.rounds} interleaved rounds after 2 warm-ups. Dense {precision} GEMM on the same threads: "
        f"{gemm / 1e9:.0f} GFLOP/s.\n\n"
        + markdown_table(header, rows)
        + f"\n\nTarget: lit_diffsr >= 1.25x the faster peer. {measured}."
        + f" Ceiling: lit_diffsr's {flops['lit_diffsr UNet'] / 1e9:.1f} GFLOP per step at the full GEMM "
        f"rate would be {ceiling:.2f}x {fastest_peer}."
    )
    data = {
        "batch": args.batch,
        "size": args.size,
        "device": args.device,
        "bf16": args.bf16,
        "parameters": {name: parameter_count(net) for name, net in nets.items()},
        "flops_per_step": flops,
        "gemm_flops_per_second": gemm,
        "ceiling_ratio_vs_fastest_peer": ceiling,
        "step_seconds": times,
        "median_step_seconds": medians,
        "ratio_vs_fastest_peer": ratio,
        "best_lit_diffsr_setting": best_lit,
        "best_ratio_vs_fastest_peer": best_ratio,
    }
    if args.profile:
        data["profile"] = {name: step_profile(steps[name]) for name in nets if "," not in name}
        body += "\n\nWhere the step goes (torch.profiler self time per step, 3 steps):\n\n"
        body += profile_table(data["profile"], gemm)
    write_results(args.name, "UNet training step against peers", body, data, load_before)
    return data


if __name__ == "__main__":
    main()
