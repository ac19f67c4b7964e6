"""Concept fidelity cos(Cw, z) beside reconstruction fidelity cos(r, â) (issue 17.1).

The decomposition-level tests use CLAP-like synthetic vectors (a large shared component, mean clip
cosine about 0.7), where reconstruction fidelity is dominated by μ_A. The folder test indexes real
files with the spectral TEST DOUBLE (not CLAP).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.concepts.decompose import audio_mean, concept_fidelity, decompose
from clapdex.concepts.dictionary import ConceptDictionary
from tests.doubles import SpectralTestEncoder, sine, use_encoder


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """60 concepts in d = 256. Well-explained clips: shared component + a mix of 2-3 concepts;
    off-vocabulary clips: shared component + a direction mostly (94 %) outside the concepts' span."""
    rng = np.random.default_rng(7)
    d, k = 256, 60
    dictionary = ConceptDictionary.from_text_embeddings(
        [f"concept {i}" for i in range(k)], rng.standard_normal((k, d)).astype(np.float32))
    atoms = dictionary.atoms
    shared = unit(rng.standard_normal(d))
    good = []
    for _ in range(40):
        cols = rng.choice(k, size=rng.integers(2, 4), replace=False)
        part = unit(rng.uniform(0.5, 1.0, len(cols)) @ atoms[cols]
                    + 0.15 * unit(rng.standard_normal(d)))
        good.append(0.82 * shared + 0.57 * part)
    basis, _ = np.linalg.qr(atoms.T)            # orthonormal basis of the atoms' span
    off = []
    for _ in range(20):
        v = rng.standard_normal(d)
        outside = unit(v - basis @ (basis.T @ v))         # nothing the concepts can build
        inside = unit(rng.standard_normal(k) @ atoms)      # a little of everything
        v = unit(0.94 * outside + 0.35 * inside)
        off.append(0.82 * shared + 0.57 * v)
    embeddings = np.array(good + off, dtype=np.float32)
    return dictionary, embeddings, np.arange(len(embeddings)) >= len(good)


def test_concept_fidelity_is_the_centred_cosine(planted):
    dictionary, embeddings, _ = planted
    mean = audio_mean(embeddings)
    result = decompose(embeddings, dictionary, mean, lam=0.05)
    z = unit(unit(embeddings) - mean)
    u = np.asarray(result.weights @ dictionary.atoms)
    norm = np.linalg.norm(u, axis=1)
    assert (norm > 0).all()
    expected = np.where(norm > 0, np.sum(u * z, axis=1) / np.where(norm > 0, norm, 1), 0.0)
    np.testing.assert_allclose(result.concept_fidelity, expected, atol=1e-12)
    # the stand-alone form (what an index upgrade uses) gives the same numbers
    np.testing.assert_allclose(concept_fidelity(result.weights, dictionary, embeddings, mean),
                               result.concept_fidelity, atol=1e-12)


def test_concept_fidelity_is_zero_without_concepts(planted):
    dictionary, embeddings, _ = planted
    mean = audio_mean(embeddings)
    result = decompose(embeddings, dictionary, mean, lam=10.0)  # above every λ_max: w = 0
    assert result.weights.nnz == 0
    np.testing.assert_array_equal(result.concept_fidelity, 0.0)
    # ... while reconstruction fidelity (r = normalize(μ_A)) stays high: why it cannot flag this
    assert result.fidelity.min() > 0.6


def test_concept_fidelity_separates_off_vocabulary_clips(planted):
    dictionary, embeddings, off = planted
    mean = audio_mean(embeddings)
    result = decompose(embeddings, dictionary, mean, lam=0.05)
    concept, recon = result.concept_fidelity, result.fidelity
    assert concept[off].max() < 0.5 < concept[~off].min()
    assert concept[~off].mean() > 0.85
    # reconstruction fidelity does not separate them at the 0.5 flag: μ_A lifts both groups
    assert recon[off].min() > 0.5


# ---- a folder with silence and an off-vocabulary sound, through the CLI -------------------------

VOCAB = [f"a {f} hz tone" for f in (200, 300, 440, 660, 1000, 1500, 2000, 3000)]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    use_encoder(monkeypatch, lambda **settings: SpectralTestEncoder())
    audio = tmp_path / "audio"
    audio.mkdir()
    sr = 8000
    for f in (200, 440, 1000, 2000):
        soundfile.write(audio / f"tone_{f}.wav", sine(f, 4.0, sr), sr)
        soundfile.write(audio / f"chord_{f}.wav", sine(f, 4.0, sr) + sine(1.5 * f, 4.0, sr, 0.3), sr)
    soundfile.write(audio / "silence.wav", np.zeros(4 * sr, np.float32), sr)
    soundfile.write(audio / "whistle_3500.wav", sine(3500, 4.0, sr), sr)  # no concept near it
    vocab = tmp_path / "tones.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    index = tmp_path / "index"
    result = CliRunner().invoke(main, ["index", str(audio), "--index", str(index),
                                       "--vocab", str(vocab)])
    assert result.exit_code == 0, result.output
    return index


def test_poorly_explained_lists_the_off_vocabulary_sound_and_leaves_silence_to_its_flag(folder):
    import json

    out = CliRunner().invoke(main, ["audit", "--poorly-explained", "--index", str(folder), "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    listed = {row["path"].rsplit("/", 1)[-1] for row in rows}
    assert listed == {"whistle_3500.wav"}  # silence has no concept by design: --flag silent
    assert all(row["concept_fidelity"] < 0.5 for row in rows)
    assert [row["concept_fidelity"] for row in rows] == sorted(row["concept_fidelity"] for row in rows)
    text = CliRunner().invoke(main, ["audit", "--poorly-explained", "--index", str(folder)]).output
    assert text.splitlines()[0] == "2 segments with concept fidelity below 0.5"
    silent = CliRunner().invoke(main, ["audit", "--flag", "silent", "--index", str(folder), "--json"])
    assert {json.loads(line)["path"].rsplit("/", 1)[-1] for line in silent.output.splitlines()} \
        == {"silence.wav"}


def test_search_flags_by_concept_fidelity(folder):
    import clapdex

    with clapdex.open_index(folder, SpectralTestEncoder()) as index:
        results = index.search(text="a 3000 hz tone", k=20)
    by_name = {r.path.rsplit("/", 1)[-1]: r.explanation for r in results}
    assert by_name["silence.wav"].low_fidelity and by_name["whistle_3500.wav"].low_fidelity
    assert not by_name["tone_440.wav"].low_fidelity
    for explanation in by_name.values():
        assert explanation.low_fidelity == (explanation.concept_fidelity < 0.5)
