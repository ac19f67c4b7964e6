"""Training the optional linear projection of audio embeddings (the research's fine-tuning step).

A d×d matrix P, initialised to the identity, is trained so that projected audio embeddings
normalize(P · normalize(a)) point at the text embedding of their class prompt: cross-entropy over
the cosines to all class prompts divided by a temperature. Training is mini-batch Adam with a
fixed seed, a stratified held-out split and early stopping on the held-out loss; the
matrix with the best held-out loss is kept.

Applying, loading and saving it (and the projected encoder an index uses) live in
clapdex.projection, next to the encoder; they are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clapdex.projection import (FORMAT, FORMAT_VERSION, ProjectedEncoder, Projection,  # noqa: F401
                                ProjectionError, apply_projection, encoder_for_index,
                                load_projection, save_projection)
from clapdex.vectors import unit_rows


@dataclass
class FineTuneResult:
    projection: Projection
    train_size: int
    validation_size: int
    epochs: int              # epochs run (including the patience tail)
    best_epoch: int          # 0: no epoch beat the identity on the held-out loss
    before_train: float      # zero-shot accuracy with the identity
    before_validation: float
    after_train: float       # with the kept (best held-out loss) matrix
    after_validation: float


def stratified_split(targets: Sequence[int], validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): the fraction of each class (at least one if it has ≥ 2)."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        n_val = int(round(validation_fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        validation.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(validation, dtype=np.int64))


def train_projection(embeddings: np.ndarray, targets: Sequence[int], class_embeddings: np.ndarray,
                     encoder_fingerprint: str, *, classes: Sequence[str] = (), prompt: str = "",
                     temperature: float = 0.05, validation_fraction: float = 0.2, learning_rate: float = 1e-3,
                     max_epochs: int = 200, patience: int = 10, batch_size: int = 256,
                     seed: int = 0, on_epoch=None) -> FineTuneResult:
    """Train the projection (see module docstring). `on_epoch(epoch, val_loss, val_acc)` reports progress."""
    import torch

    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(embeddings):
        raise ValueError("one target per embedding")
    if not 0 < validation_fraction < 1:
        raise ProjectionError("validation fraction must be between 0 and 1")
    if temperature <= 0:
        raise ProjectionError("temperature must be positive")
    train_idx, val_idx = stratified_split(targets, validation_fraction, seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ProjectionError("fine-tuning needs at least 2 files in some class (for a held-out split)")

    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(unit_rows(embeddings).astype(np.float32))
    y = torch.from_numpy(targets)
    text = torch.from_numpy(unit_rows(class_embeddings).astype(np.float32))
    dimension = x.shape[1]
    matrix = torch.nn.Parameter(torch.eye(dimension))
    optimiser = torch.optim.Adam([matrix], lr=learning_rate)

    def logits(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        projected = torch.nn.functional.normalize(rows @ weights.T, dim=1)
        return projected @ text.T / temperature

    def evaluate(idx: np.ndarray, weights: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            out = logits(x[idx], weights)
            loss = torch.nn.functional.cross_entropy(out, y[idx]).item()
            return loss, (out.argmax(dim=1) == y[idx]).float().mean().item()

    identity = torch.eye(dimension)
    _, before_train = evaluate(train_idx, identity)
    best_loss, before_val = evaluate(val_idx, identity)
    best_matrix, best_epoch, epoch = identity.clone(), 0, 0
    train_tensor = torch.from_numpy(train_idx)
    for epoch in range(1, max_epochs + 1):
        order = train_tensor[torch.randperm(len(train_tensor), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(logits(x[batch], matrix), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        val_loss, val_acc = evaluate(val_idx, matrix.detach())
        if on_epoch:
            on_epoch(epoch, val_loss, val_acc)
        if val_loss < best_loss * (1 - 1e-4):  # relative: losses near 0 still count as improving
            best_loss, best_matrix, best_epoch = val_loss, matrix.detach().clone(), epoch
        elif epoch - best_epoch >= patience:
            break

    _, after_train = evaluate(train_idx, best_matrix)
    _, after_val = evaluate(val_idx, best_matrix)
    metrics = {"before_train_accuracy": before_train, "before_validation_accuracy": before_val,
               "after_train_accuracy": after_train, "after_validation_accuracy": after_val}
    projection = Projection(best_matrix.numpy().astype(np.float32), encoder_fingerprint, tuple(classes),
                            prompt, temperature, metrics)
    return FineTuneResult(projection, len(train_idx), len(val_idx), epoch, best_epoch,
                          before_train, before_val, after_train, after_val)
