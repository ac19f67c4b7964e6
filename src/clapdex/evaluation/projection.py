"""Training the optional linear projection of audio embeddings (the research's fine-tuning step).

A d×d matrix P, initialised to the identity, is trained so that projected audio embeddings
normalize(P · normalize(a)) point at the text embedding of their class prompt: cross-entropy over
the cosines to all class prompts divided by a temperature. Training is mini-batch Adam with a
fixed seed on three disjoint stratified splits: train (the gradient steps), validation (early
stopping: the matrix with the best validation loss is kept) and test, used for nothing but the
reported before/after accuracy, so that figure is not chosen by the early stopping.

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
    best_epoch: int          # 0: no epoch beat the identity on the validation loss
    before_train: float      # zero-shot accuracy with the identity
    before_validation: float
    after_train: float       # with the kept (best validation loss) matrix
    after_validation: float  # chosen by early stopping on this split: optimistic
    test_size: int = 0
    before_test: float = 0.0  # the honest figure: a split training never looked at
    after_test: float = 0.0


def stratified_split(targets: Sequence[int], validation_fraction: float, seed: int,
                     test_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices, disjoint: those fractions of each class. A class keeps
    at least one training file; with enough files it gives at least one to validation (≥ 2
    files) and to test (≥ 3 files, when test_fraction > 0)."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, validation, test = [], [], []
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        n = len(members)
        n_val = min(max(int(round(validation_fraction * n)), 1), n - 1) if n >= 2 else 0
        n_test = 0
        if test_fraction > 0 and n >= 3:
            n_test = min(max(int(round(test_fraction * n)), 1), n - n_val - 1)
            if n_test == 0:  # validation took all it could: share with test
                n_val, n_test = n_val - 1, 1
        validation.extend(members[:n_val])
        test.extend(members[n_val:n_val + n_test])
        train.extend(members[n_val + n_test:])
    return tuple(np.sort(np.array(part, dtype=np.int64)) for part in (train, validation, test))


def train_projection(embeddings: np.ndarray, targets: Sequence[int], class_embeddings: np.ndarray,
                     encoder_fingerprint: str, *, classes: Sequence[str] = (), prompt: str = "",
                     temperature: float = 0.05, validation_fraction: float = 0.2, learning_rate: float = 1e-3,
                     max_epochs: int = 200, patience: int = 10, batch_size: int = 256,
                     seed: int = 0, on_epoch=None, test_fraction: float = 0.2) -> FineTuneResult:
    """Train the projection (see module docstring). `on_epoch(epoch, val_loss, val_acc)` reports
    progress. `test_fraction` 0 keeps no test split (the after-accuracy is then the validation
    split's, which early stopping chose)."""
    import torch

    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(embeddings):
        raise ValueError("one target per embedding")
    if not 0 < validation_fraction < 1:
        raise ProjectionError("validation fraction must be between 0 and 1")
    if not 0 <= test_fraction < 1 or validation_fraction + test_fraction >= 1:
        raise ProjectionError("test fraction must be between 0 and 1, and leave files for training "
                              "with the validation fraction")
    if temperature <= 0:
        raise ProjectionError("temperature must be positive")
    train_idx, val_idx, test_idx = stratified_split(targets, validation_fraction, seed, test_fraction)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ProjectionError("fine-tuning needs at least 2 files in some class (for a held-out split)")
    if test_fraction > 0 and len(test_idx) == 0:
        raise ProjectionError("fine-tuning with a test split needs at least 3 files in some class "
                              "(or --test-fraction 0)")

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
        if len(idx) == 0:
            return float("nan"), float("nan")
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
    _, before_test = evaluate(test_idx, identity)
    _, after_test = evaluate(test_idx, best_matrix)
    metrics = {"before_train_accuracy": before_train, "before_validation_accuracy": before_val,
               "after_train_accuracy": after_train, "after_validation_accuracy": after_val}
    if len(test_idx):
        metrics.update(before_test_accuracy=before_test, after_test_accuracy=after_test)
    projection = Projection(best_matrix.numpy().astype(np.float32), encoder_fingerprint, tuple(classes),
                            prompt, temperature, metrics)
    return FineTuneResult(projection, len(train_idx), len(val_idx), epoch, best_epoch,
                          before_train, before_val, after_train, after_val,
                          len(test_idx), before_test, after_test)
