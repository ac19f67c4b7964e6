"""Windows of many files embedded together, in batches of exactly the encoder's batch size: one
copy of the rule that the indexer and the evaluation share. A file shorter than a batch then
costs a share of one forward pass, not a pass of its own (eval took ~2.7 s per one-window file
when it embedded file by file)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Owner = TypeVar("Owner")


def batch_size(encoder) -> int:
    """The number of windows the encoder embeds per forward pass (its batch_size, else 16)."""
    return max(1, int(getattr(encoder, "batch_size", 16)))


def take_batch(buffer: list[tuple[Owner, np.ndarray]], size: int
               ) -> tuple[list[tuple[Owner, np.ndarray]], list[tuple[Owner, np.ndarray]]]:
    """(the first `size` windows of `buffer`, the rest), both as (owner, windows) pieces in
    order; a piece that straddles the boundary is cut in two."""
    take, rest, room = [], [], size
    for owner, windows in buffer:
        if room >= len(windows):
            take.append((owner, windows))
            room -= len(windows)
        elif room > 0:
            take.append((owner, windows[:room]))
            rest.append((owner, windows[room:]))
            room = 0
        else:
            rest.append((owner, windows))
    return take, rest
