"""The linear projection: training improves a misaligned set; files round-trip and check the encoder."""

from __future__ import annotations

import numpy as np
import pytest

from clapdex.evaluation.projection import (ProjectedEncoder, Projection, ProjectionError, apply_projection,
                                           load_projection, save_projection, stratified_split,
                                           train_projection)
from clapdex.evaluation.zeroshot import accuracy, classify
from tests.doubles import SpectralTestEncoder


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These matrices are tiny: extra torch threads only add contention (25x slower on a busy 2-core box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _misaligned_set(seed=0, d=32, n_classes=4, per_class=40):
    """Audio = class text direction + noise, then rotated far away from the text directions."""
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((n_classes, d))
    targets = np.repeat(np.arange(n_classes), per_class)
    audio = text[targets] / np.linalg.norm(text[targets], axis=1, keepdims=True)
    audio = audio + 0.3 * rng.standard_normal(audio.shape) / np.sqrt(d)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (audio @ rotation.T).astype(np.float32), targets, text.astype(np.float32)


def test_fine_tuning_improves_a_misaligned_set():
    audio, targets, text = _misaligned_set()
    assert accuracy(targets, classify(audio, text)) < 0.6  # the rotation broke zero-shot
    result = train_projection(audio, targets, text, "enc", max_epochs=100, patience=10,
                              learning_rate=3e-2, batch_size=64, seed=0, test_fraction=0.0)
    assert result.test_size == 0
    assert 0 < result.best_epoch < result.epochs <= 100  # it stopped early, on the held-out loss
    assert result.after_validation >= 0.9 > result.before_validation
    assert result.after_train > result.before_train
    projected = apply_projection(audio, result.projection)
    assert accuracy(targets, classify(projected, text)) >= 0.9


def test_training_is_reproducible_with_a_fixed_seed():
    audio, targets, text = _misaligned_set(seed=3, per_class=10)
    runs = [train_projection(audio, targets, text, "enc", max_epochs=5, seed=7).projection.matrix
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_split_is_stratified_and_disjoint():
    targets = np.repeat([0, 1, 2], [10, 5, 2])
    train, validation, test = stratified_split(targets, 0.2, seed=0)
    assert set(train).isdisjoint(validation) and len(train) + len(validation) == 17
    assert sorted(np.bincount(targets[validation]).tolist()) == [1, 1, 2]
    assert len(test) == 0  # no test split asked for


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_splits_are_disjoint_and_cover_every_file(seed):
    targets = np.repeat([0, 1, 2, 3, 4], [20, 7, 3, 2, 1])
    train, validation, test = stratified_split(targets, 0.2, seed=seed, test_fraction=0.2)
    assert not (set(train) & set(validation) or set(train) & set(test) or set(validation) & set(test))
    assert sorted([*train, *validation, *test]) == list(range(len(targets)))
    assert np.bincount(targets[test], minlength=5).tolist() == [4, 1, 1, 0, 0]
    assert np.bincount(targets[validation], minlength=5).tolist() == [4, 1, 1, 1, 0]
    assert set(targets[train]) == {0, 1, 2, 3, 4}  # every class still trains


def test_after_accuracy_is_reported_on_the_test_split():
    audio, targets, text = _misaligned_set()
    result = train_projection(audio, targets, text, "enc", max_epochs=100, patience=10,
                              learning_rate=3e-2, batch_size=64, seed=0, test_fraction=0.25)
    train, validation, test = stratified_split(targets, 0.2, 0, test_fraction=0.25)
    assert (result.train_size, result.validation_size, result.test_size) == (
        len(train), len(validation), len(test))
    projected = apply_projection(audio[test], result.projection)
    assert result.after_test == pytest.approx(accuracy(targets[test], classify(projected, text)))
    assert result.before_test == pytest.approx(accuracy(targets[test], classify(audio[test], text)))
    assert result.after_test > result.before_test
    assert result.projection.metrics["after_test_accuracy"] == result.after_test


def test_projection_round_trips_and_refuses_another_encoder(tmp_path):
    rng = np.random.default_rng(0)
    projection = Projection(rng.standard_normal((8, 8)).astype(np.float32), "fp-A", ("a", "b"), "{}", 0.05,
                            {"after_validation_accuracy": 0.9})
    path = save_projection(projection, tmp_path / "p.pt")
    loaded = load_projection(path, "fp-A")
    np.testing.assert_array_equal(loaded.matrix, projection.matrix)
    assert (loaded.classes, loaded.prompt, loaded.content_hash) == (("a", "b"), "{}", projection.content_hash)
    emb = rng.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(apply_projection(emb, loaded), apply_projection(emb, projection))
    with pytest.raises(ProjectionError, match="trained for encoder"):
        load_projection(path, "fp-B")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ProjectionError):
        load_projection(tmp_path / "junk.pt")
    with pytest.raises(ProjectionError, match="no such"):
        load_projection(tmp_path / "missing.pt")


def test_projected_encoder_changes_audio_and_fingerprint_only():
    encoder = SpectralTestEncoder(dimension=8, window_seconds=0.25)
    matrix = np.diag(np.arange(1, 9)).astype(np.float32)
    projected = ProjectedEncoder(encoder, Projection(matrix, encoder.fingerprint))
    windows = np.random.default_rng(0).standard_normal((2, 2000)).astype(np.float32)
    raw = encoder.embed_audio(windows)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True) * np.arange(1, 9)
    np.testing.assert_allclose(projected.embed_audio(windows), expected, rtol=1e-5)
    np.testing.assert_array_equal(projected.embed_text(["440 hz"]), encoder.embed_text(["440 hz"]))
    assert projected.fingerprint.startswith(encoder.fingerprint + "+projection:")
    with pytest.raises(ProjectionError):
        ProjectedEncoder(SpectralTestEncoder(dimension=8, seed=5), Projection(matrix, encoder.fingerprint))
