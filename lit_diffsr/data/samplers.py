"""A training sampler whose whole randomness is a function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class SeededSampler(DistributedSampler):
    """Yields `(index, item_seed)` pairs: the visiting order and one seed per item (for its random
    crop, flip and degradation) drawn from a `torch.Generator` seeded from (seed, epoch).

    Items then do not depend on which worker loads them, and an epoch is reproduced from
    `state_dict()` alone. Lightning calls `set_epoch` at the start of every epoch.

    Distributed: the epoch's order is padded (by wrapping) to a multiple of `num_replicas` and rank `rank`
    takes every `num_replicas`-th item. It is a `DistributedSampler`, so Lightning uses it as it is.
    Exact mid-epoch resume: `consumed` items of the epoch (all ranks together, a multiple of
    `num_replicas`) were already trained on and are skipped; `len()` stays the whole epoch's share, as
    Lightning counts the resumed epoch's batches from the checkpoint's progress.

    Shards: `groups` (the sizes of consecutive runs of items stored together, e.g. one litdata chunk each)
    makes the shuffle local: the groups' order is permuted and then the items inside each group, so a
    reader opens each shard once per pass instead of once per item. The shard writer shuffles the items
    across shards once, so a group is already a random sample of the data set.
    """

    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        groups: list[int] | None = None,
    ):
        if num_items < 1:
            raise ValueError(f"SeededSampler needs at least one item, got num_items={num_items}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"SeededSampler: rank={rank} must be in [0, num_replicas={num_replicas})")
        if groups is not None and sum(groups) != num_items:
            raise ValueError(f"SeededSampler: the groups hold {sum(groups)} items, not num_items={num_items}")
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.num_items, self.consumed, self.groups = num_items, 0, groups

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.consumed = 0  # a new epoch starts from its first item
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) so that neighbouring seeds do not share epochs' streams.
        mixed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0])
        return torch.Generator().manual_seed(mixed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = self._generator()
        order = self._order(generator)
        item_seeds = torch.randint(0, 2**62, (self.num_items,), generator=generator)
        pairs = list(zip(order.tolist(), item_seeds.tolist(), strict=True))
        pairs += pairs[: self.total_size - self.num_items]  # padding, as DistributedSampler does
        return iter(pairs[self.consumed :][self.rank :: self.num_replicas])

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        if self.groups is None:
            return torch.randperm(self.num_items, generator=generator)
        starts = torch.tensor([0, *self.groups]).cumsum(0)
        return torch.cat(
            [
                starts[group] + torch.randperm(self.groups[group], generator=generator)
                for group in torch.randperm(len(self.groups), generator=generator).tolist()
            ]
        )

    def __len__(self) -> int:
        return self.num_samples

    def consumed_at(self, batches: int, batch_size: int) -> int:
        """Items of the epoch consumed by all ranks once each rank has taken `batches` batches (counted from
        the start of the epoch, resumed parts included)."""
        return min(batches * batch_size * self.num_replicas, self.total_size)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self.consumed = int(state.get("consumed", 0))
