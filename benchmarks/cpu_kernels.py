"""The CPU kernels behind the UNet's bf16 path: PyTorch's choice against lit_diffsr's, forward + backward.

- attention over heads of 256 positions (batch 16, 4 heads of 32 channels: the benchmark UNet at 16x16):
  `scaled_dot_product_attention` (PyTorch's fused CPU kernel) against lit_diffsr's `multihead_attention`;
- GroupNorm (32 groups) of a channels_last activation: `nn.GroupNorm` against lit_diffsr's `GroupNorm`,
  which normalises in NCHW and hands back channels_last;
- a 3x3 convolution in NCHW and in channels_last (what bf16 gains there, and why channels_last is worth it).
Each pair in fp32 and bf16, interleaved, medians.

    python -m benchmarks.cpu_kernels [--rounds 20] [--threads 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved, load_average, markdown_table, median, spread, write_results
from lit_diffsr.nets.unet import GroupNorm, multihead_attention

BATCH = 16


def forward_backward(function: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    leaves = [tensor.detach().requires_grad_() for tensor in inputs]
    output = function(*leaves)
    gradient = torch.randn_like(output)

    def run() -> None:
        function(*leaves).backward(gradient)

    return run


def candidates(dtype: torch.dtype) -> dict[str, dict[str, Callable[[], None]]]:
    """Kernel -> {implementation: one forward + backward}."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int, channels_last: bool = False) -> torch.Tensor:
        tensor = torch.randn(*shape, generator=generator).to(dtype)
        return tensor.contiguous(memory_format=torch.channels_last) if channels_last else tensor

    heads = [randn(BATCH, 4, 256, 32) for _ in range(3)]
    activation = randn(BATCH, 64, 32, 32, channels_last=True)
    plain_norm, lit_norm = torch.nn.GroupNorm(32, 64).to(dtype), GroupNorm(32, 64).to(dtype)
    weight = randn(128, 128, 3, 3)

    def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=1)

    return {
        "attention (16 x 4 x 256 x 32)": {
            "fused SDPA": forward_backward(F.scaled_dot_product_attention, *heads),
            "lit_diffsr": forward_backward(multihead_attention, *heads),
        },
        "GroupNorm, channels_last input (16 x 64 x 32 x 32)": {
            "nn.GroupNorm": forward_backward(plain_norm, activation),
            "lit_diffsr": forward_backward(lit_norm, activation),
        },
        "conv 3x3, 128 -> 128 at 16x16": {
            "NCHW": forward_backward(conv, randn(BATCH, 128, 16, 16), weight),
            "channels_last": forward_backward(
                conv,
                randn(BATCH, 128, 16, 16, channels_last=True),
                weight.contiguous(memory_format=torch.channels_last),
            ),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    rows, data = [], {}
    for dtype in (torch.float32, torch.bfloat16):
        for kernel, implementations in candidates(dtype).items():
            times = interleaved(implementations, args.rounds, warmup=2)
            baseline, ours = (median(values) for values in times.values())
            rows.append(
                [
                    kernel,
                    str(dtype).removeprefix("torch."),
                    *(spread(v) for v in times.values()),
                    f"{baseline / ours:.2f}",
                ]
            )
            data[f"{kernel}, {dtype}"] = times
    header = [
        "kernel (forward + backward)",
        "dtype",
        "PyTorch's / NCHW",
        "lit_diffsr's / channels_last",
        "speed-up",
    ]
    body = (
        f"{args.rounds} interleaved rounds after 2 warm-ups. In float32 lit_diffsr's attention and GroupNorm "
        "are PyTorch's (no detour): those rows show the noise.\n\n" + markdown_table(header, rows)
    )
    write_results("cpu_kernels", "CPU kernels of the bf16 path", body, {"seconds": data}, load_before)
    return data


if __name__ == "__main__":
    main()
