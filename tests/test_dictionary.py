"""ConceptDictionary math and the on-disk cache of concept text embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from clapdex.concepts.dictionary import ConceptDictionary, build_dictionary
from clapdex.concepts.vocabulary import Vocabulary
from clapdex.errors import DecompositionError
from tests.doubles import SpectralTestEncoder


class CountingEncoder:
    """Wraps the spectral TEST DOUBLE and counts the texts it is asked to embed."""

    def __init__(self, inner: SpectralTestEncoder):
        self.inner = inner
        self.dimension = inner.dimension
        self.sample_rate = inner.sample_rate
        self.window_seconds = inner.window_seconds
        self.fingerprint = inner.fingerprint
        self.texts_embedded = 0
        self.calls = 0

    def embed_text(self, texts):
        self.calls += 1
        self.texts_embedded += len(texts)
        return self.inner.embed_text(texts)

    def embed_audio(self, windows):
        return self.inner.embed_audio(windows)


VOCAB = Vocabulary("test", tuple(f"a {f} hz tone" for f in (110, 220, 440, 880, 1760)) + ("rain", "dog"))


def test_atoms_follow_the_definition():
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((6, 10)) * rng.uniform(0.5, 3, (6, 1))).astype(np.float32)
    d = ConceptDictionary.from_text_embeddings([f"c{i}" for i in range(6)], emb)
    t = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    centred = t - t.mean(axis=0)
    expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(d.atoms, expected, atol=1e-12)
    assert d.atoms.dtype == np.float64 and d.text_embeddings.dtype == np.float32
    np.testing.assert_array_equal(d.text_embeddings, emb)
    np.testing.assert_allclose(np.linalg.norm(d.atoms, axis=1), 1.0)
    np.testing.assert_allclose(d.gram(), d.atoms @ d.atoms.T)
    assert d.size == 6 and d.dimension == 10 and d.names == tuple(f"c{i}" for i in range(6))


def test_single_concept_is_not_centred():
    d = ConceptDictionary.from_text_embeddings(["only"], np.array([[3.0, 4.0]]))
    np.testing.assert_allclose(d.atoms, [[0.6, 0.8]])


def test_concept_equal_to_the_mean_gets_a_zero_atom():
    d = ConceptDictionary.from_text_embeddings(["a", "b"], np.array([[1.0, 0.0], [2.0, 0.0]]))
    np.testing.assert_array_equal(d.atoms, np.zeros((2, 2)))


@pytest.mark.parametrize("emb", [np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[np.nan, 1.0], [1.0, 0.0]]),
                                 np.ones((3, 2))])
def test_rejects_unusable_embeddings(emb):
    with pytest.raises(DecompositionError):
        ConceptDictionary.from_text_embeddings(["a", "b"], emb)


def test_build_uses_the_cache(tmp_path):
    encoder = CountingEncoder(SpectralTestEncoder())
    first = build_dictionary(encoder, VOCAB, cache_dir=tmp_path, batch_size=3)
    assert encoder.texts_embedded == len(VOCAB.concepts) and encoder.calls == 3  # batched
    assert first.names == VOCAB.concepts
    np.testing.assert_array_equal(first.text_embeddings, SpectralTestEncoder().embed_text(list(VOCAB.concepts)))
    second = build_dictionary(encoder, VOCAB, cache_dir=tmp_path)
    assert encoder.texts_embedded == len(VOCAB.concepts)  # nothing re-embedded
    np.testing.assert_array_equal(second.atoms, first.atoms)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]  # no temp files left behind


def test_cache_is_keyed_by_encoder_and_vocabulary(tmp_path):
    encoder = CountingEncoder(SpectralTestEncoder())
    build_dictionary(encoder, VOCAB, cache_dir=tmp_path)
    other_vocab = Vocabulary("test", VOCAB.concepts + ("siren",))
    build_dictionary(encoder, other_vocab, cache_dir=tmp_path)
    assert encoder.texts_embedded == 2 * len(VOCAB.concepts) + 1
    other_model = CountingEncoder(SpectralTestEncoder(seed=1))
    d = build_dictionary(other_model, VOCAB, cache_dir=tmp_path)
    assert other_model.texts_embedded == len(VOCAB.concepts)
    np.testing.assert_array_equal(d.text_embeddings, SpectralTestEncoder(seed=1).embed_text(list(VOCAB.concepts)))


def test_corrupt_cache_is_recomputed(tmp_path):
    encoder = CountingEncoder(SpectralTestEncoder())
    good = build_dictionary(encoder, VOCAB, cache_dir=tmp_path)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_bytes(b"not a numpy file")
    again = build_dictionary(encoder, VOCAB, cache_dir=tmp_path)
    assert encoder.texts_embedded == 2 * len(VOCAB.concepts)
    np.testing.assert_array_equal(again.text_embeddings, good.text_embeddings)
    # and the rewritten file is good again
    build_dictionary(encoder, VOCAB, cache_dir=tmp_path)
    assert encoder.texts_embedded == 2 * len(VOCAB.concepts)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAPDEX_CACHE_DIR", str(tmp_path))
    build_dictionary(SpectralTestEncoder(), VOCAB)
    assert len(list((tmp_path / "concepts").glob("*.npz"))) == 1


def test_empty_vocabulary_is_refused(tmp_path):
    with pytest.raises(DecompositionError):
        build_dictionary(SpectralTestEncoder(), Vocabulary("empty", ()), cache_dir=tmp_path)


def test_a_projection_reuses_the_models_concept_embeddings(tmp_path):
    # A projection changes audio embeddings only, so the vocabulary is not embedded again for it.
    from clapdex.evaluation.projection import ProjectedEncoder, Projection

    encoder = CountingEncoder(SpectralTestEncoder())
    plain = build_dictionary(encoder, VOCAB, cache_dir=tmp_path)
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))[0]
    projected = ProjectedEncoder(encoder, Projection(rotation.astype(np.float32), encoder.fingerprint))
    assert projected.fingerprint != encoder.fingerprint
    again = build_dictionary(projected, VOCAB, cache_dir=tmp_path)
    assert encoder.texts_embedded == len(VOCAB.concepts)
    np.testing.assert_array_equal(again.text_embeddings, plain.text_embeddings)
