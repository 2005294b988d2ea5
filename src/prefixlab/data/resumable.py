"""Where a run is in its training data: an epoch's order as a pure function of (seed, epoch), and
a DataLoader whose position Lightning saves in the checkpoint, so a resumed run sees the same
batches in the same order as an uninterrupted one (the rest of resuming: ``training/resume.py``)."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """The shuffled order of an epoch, a pure function of (seed, epoch).

    It is the order the stock ``DataLoader(shuffle=True, generator=Generator().manual_seed(seed))``
    gives under Lightning (a test checks it over several epochs), so results did not change:
    per epoch that loader's generator draws one int64 (the loader's base seed) and one
    permutation, and a second, unused permutation when the epoch ends on a short batch (the
    batch sampler then runs the sampler to its end, which draws the next permutation).
    Lightning calls ``set_epoch``; ``resume_at`` skips what an interrupted epoch already consumed.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.epoch = 0
        self.consumed = 0  # examples of the current epoch handed out so far
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, consumed: int) -> None:
        self._resume = (epoch, consumed)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            torch.randperm(self.num_examples, generator=generator)
            if self.num_examples % self.batch_size:
                torch.randperm(self.num_examples, generator=generator)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return torch.randperm(self.num_examples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[int]:
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None
        self.consumed = skip
        for index in self.order(self.epoch)[skip:]:
            # counted before it is handed out: a checkpoint saved while its batch trains counts it
            self.consumed += 1
            yield index


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning saves in the checkpoint (``state_dict`` and
    ``load_state_dict`` make it "stateful" for the fit loop). Single process only: worker
    processes would run the sampler ahead of training."""

    def __init__(self, dataset, batch_size: int, seed: int, collate_fn) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=ResumableSampler(len(dataset), batch_size, seed),
            collate_fn=collate_fn,
            generator=torch.Generator(),  # keeps the loader's base-seed draws off the global RNG
        )

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "consumed": self.sampler.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(int(state["epoch"]), int(state["consumed"]))
