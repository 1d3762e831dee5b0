"""A training sampler whose whole randomness is a function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields `(index, item_seed)` pairs: the visiting order and one seed per item (for its random
    crop, flip and degradation) drawn from a `torch.Generator` seeded from (seed, epoch).

    Items then do not depend on which worker loads them, and an epoch is reproduced from
    `state_dict()` alone. Lightning calls `set_epoch` at the start of every epoch (also through
    its distributed wrapper).
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True):
        if num_items < 1:
            raise ValueError(f"SeededSampler needs at least one item, got num_items={num_items}")
        self.num_items, self.seed, self.shuffle, self.epoch = num_items, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) so that neighbouring seeds do not share epochs' streams.
        mixed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0])
        return torch.Generator().manual_seed(mixed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = self._generator()
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        item_seeds = torch.randint(0, 2**62, (self.num_items,), generator=generator)
        return zip(order.tolist(), item_seeds.tolist(), strict=True)

    def __len__(self) -> int:
        return self.num_items

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
