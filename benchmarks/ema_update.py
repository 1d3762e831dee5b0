"""EMA update time: Lightning's `EMAWeightAveraging` (per-tensor avg_fn) against lit_diffsr's `ForeachEMA`.

Both averaged models wrap the UNet of an experiment; one call = one EMA update after a training step.
Interleaved, medians.

    python -m benchmarks.ema_update [--experiments quickstart cdm_64_256] [--rounds 20] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from benchmarks.common import (
    compose_experiment,
    interleaved,
    load_average,
    markdown_table,
    median,
    spread,
    write_results,
)
from lit_diffsr.callbacks.ema import _ForeachEMAModel


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", nargs="*", default=["quickstart", "cdm_64_256"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    rows, data = [], {}
    for name in args.experiments:
        net = instantiate(compose_experiment(name).model.net).to(args.device)
        tensors = len(list(net.parameters()))
        lightning = AveragedModel(
            net, use_buffers=True, avg_fn=get_ema_avg_fn(0.9999)
        )  # as EMAWeightAveraging
        foreach = _ForeachEMAModel(net, None, True, 0.9999)
        candidates = {
            "EMAWeightAveraging": lambda a=lightning, n=net: a.update_parameters(n),
            "ForeachEMA": lambda a=foreach, n=net: a.update_parameters(n),
        }
        times = interleaved(candidates, args.rounds, warmup=2, synchronize=args.device.startswith("cuda"))
        speedup = median(times["EMAWeightAveraging"]) / median(times["ForeachEMA"])
        parameters = sum(p.numel() for p in net.parameters()) / 1e6
        rows.append(
            [
                name,
                f"{parameters:.1f} M in {tensors} tensors",
                spread(times["EMAWeightAveraging"]),
                spread(times["ForeachEMA"]),
                f"{speedup:.2f}x",
            ]
        )
        data[name] = {"seconds": times, "speedup": speedup}
    body = (
        f"One EMA update (decay 0.9999) of the experiment's UNet, device {args.device}, {args.rounds} "
        "interleaved rounds after 2 warm-ups.\n\n"
        + markdown_table(["UNet of", "size", "EMAWeightAveraging", "ForeachEMA", "speed-up"], rows)
    )
    write_results("ema_update", "EMA update: per-tensor against foreach", body, data, load_before)
    return data


if __name__ == "__main__":
    main()
