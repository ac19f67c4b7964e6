"""An index built with `--projection` (the fine-tuned linear projection): it stores the matrix and
projected embeddings, and search / explain / a later `index` apply it without the file. The model is
the spectral TEST DOUBLE (through the encoder seam); the projection is a fixed
random permutation, so projected and unprojected embeddings are far apart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from clapdex.api import open_index
from clapdex.audio import cut_windows, load_audio
from clapdex.cli import main
from clapdex.concepts.explain import explain_file
from clapdex.evaluation.projection import ProjectedEncoder, Projection, apply_projection, save_projection
from clapdex.storage.database import IndexStore
from clapdex.storage.schema import SegmentRow
from tests.doubles import SpectralTestEncoder, use_encoder
from tests.search_fixtures import CONCEPTS, write_corpus


def permutation(seed: int, dimension: int = 64) -> Projection:
    matrix = np.eye(dimension, dtype=np.float32)[np.random.default_rng(seed).permutation(dimension)]
    return Projection(matrix, SpectralTestEncoder().fingerprint)


@pytest.fixture
def double(monkeypatch):
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder())


@pytest.fixture
def setup(tmp_path):
    audio = tmp_path / "audio"
    files = write_corpus(audio, SpectralTestEncoder().sample_rate)
    vocab = tmp_path / "tones.txt"
    vocab.write_text("\n".join(CONCEPTS) + "\n")
    projection = permutation(1)
    return {"audio": audio, "files": files, "vocab": vocab, "index": tmp_path / "index",
            "projection": projection, "projection_file": save_projection(projection, tmp_path / "p.pt"),
            "other_file": save_projection(permutation(2), tmp_path / "other.pt"), "tmp": tmp_path}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def build(setup, *extra):
    result = run("index", setup["audio"], "--index", setup["index"], "--vocab", setup["vocab"],
                 "--lambda", "0.02", *extra)
    assert result.exit_code == 0, result.output
    return result


def stored_rows(store: IndexStore, path) -> np.ndarray:
    """The stored embeddings of one file's segments, in window order."""
    row = store.file_by_path(str(path))
    with store.session() as session:
        ids = session.scalars(select(SegmentRow.id).where(SegmentRow.file_id == row.id)
                              .order_by(SegmentRow.start)).all()
    _, embeddings = store.segment_embeddings(ids)
    return embeddings


def raw_embeddings(path) -> np.ndarray:
    double = SpectralTestEncoder()
    samples, _ = load_audio(path, double.sample_rate)
    windows, _ = cut_windows(samples, double.sample_rate, double.window_seconds)
    return double.embed_audio(windows)


def test_index_stores_the_projection_and_projected_embeddings(setup, double):
    build(setup, "--projection", setup["projection_file"])
    projection = setup["projection"]
    with IndexStore.open(setup["index"]) as store:
        settings = store.settings
        assert np.array_equal(settings.projection, projection.matrix)
        assert settings.projection_hash == projection.content_hash
        assert settings.encoder_fingerprint == ProjectedEncoder(SpectralTestEncoder(), projection).fingerprint
        for path in setup["files"].values():
            raw = raw_embeddings(path)
            stored = stored_rows(store, path.resolve())
            np.testing.assert_allclose(stored, apply_projection(raw, projection), atol=1e-6)
            assert not np.allclose(stored, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-2)


def test_search_applies_the_stored_projection_and_leaves_text_unprojected(setup, double):
    build(setup, "--projection", setup["projection_file"])
    # A copy at another path is not in the index: it is embedded now, and only when the query is
    # projected like the stored embeddings does it match its original exactly.
    copy = shutil.copy(setup["files"]["tone_1000.wav"], setup["tmp"] / "copy.wav")
    found = run("similar", copy, "--index", setup["index"], "--json", "-k", "1", "--mode", "dense")
    assert found.exit_code == 0, found.output
    top = json.loads(found.output.splitlines()[0])
    assert top["path"].endswith("tone_1000.wav") and top["dense"] == pytest.approx(1.0, abs=1e-5)

    text = "a 1000 hz tone"
    with open_index(setup["index"], encoder=SpectralTestEncoder()) as index:
        hit = index.search(text=text, mode="dense", segments=True, k=1).results[0]
        _, stored = index.store.segment_embeddings()
    query = SpectralTestEncoder().embed_text([text])[0].astype(np.float64)
    units = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    assert hit.dense == pytest.approx(float(np.max(units @ (query / np.linalg.norm(query)))), abs=1e-5)


def test_explain_with_the_index_uses_its_projection(setup, double):
    build(setup, "--projection", setup["projection_file"])
    path = setup["files"]["tone_500_1500.wav"]
    result = run("explain", path, "--index", setup["index"], "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    windows = [json.loads(line) for line in result.output.splitlines()]

    with IndexStore.open(setup["index"]) as store:
        dictionary, settings = store.dictionary(), store.settings

    def expected(encoder):
        return explain_file(path, encoder, dictionary, settings.audio_mean, settings.sparsity, top=3)

    projected = expected(ProjectedEncoder(SpectralTestEncoder(), setup["projection"]))
    assert [w["fidelity"] for w in windows] == pytest.approx([w.fidelity for w in projected], abs=1e-6)
    assert [[c["concept"] for c in w["concepts"]] for w in windows] == \
        [[c.concept for c in w.concepts] for w in projected]
    unprojected = expected(SpectralTestEncoder())
    assert [w["fidelity"] for w in windows] != pytest.approx([w.fidelity for w in unprojected], abs=1e-3)

    same = run("explain", path, "--index", setup["index"], "--json", "--top", "3",
               "--projection", setup["projection_file"])
    assert same.exit_code == 0 and same.output == result.output


def test_another_projection_is_refused_with_one_line(setup, double):
    build(setup, "--projection", setup["projection_file"])
    for args in (("index", setup["audio"]), ("explain", setup["files"]["tone_500.wav"])):
        result = run(*args, "--index", setup["index"], "--projection", setup["other_file"])
        assert result.exit_code == 1
        assert result.output.startswith("error: index ") and "built with projection" in result.output
        assert "--rebuild" in result.output and len(result.output.strip().splitlines()) == 1


def test_an_index_without_projection_refuses_one(setup, double):
    build(setup)
    with IndexStore.open(setup["index"]) as store:
        assert store.settings.projection is None and store.settings.projection_hash is None
    result = run("index", setup["audio"], "--index", setup["index"], "--projection", setup["projection_file"])
    assert result.exit_code == 1 and "built without a projection" in result.output
    assert "Traceback" not in result.output


def test_a_later_run_keeps_projecting_and_rebuild_starts_over(setup, double):
    build(setup, "--projection", setup["projection_file"])
    new = shutil.copy(setup["files"]["tone_500.wav"], setup["audio"] / "again.flac")
    shutil.copy(setup["files"]["noise.wav"], setup["audio"] / "later.wav")
    build(setup, "--json")  # no --projection: the stored one is applied to the new files
    with IndexStore.open(setup["index"]) as store:
        path = (setup["audio"] / "later.wav").resolve()
        np.testing.assert_allclose(stored_rows(store, path),
                                   apply_projection(raw_embeddings(path), setup["projection"]), atol=1e-6)
        assert store.file_by_path(str(new.resolve())) is not None

    build(setup, "--rebuild")
    with IndexStore.open(setup["index"]) as store:
        assert store.settings.projection is None
        assert store.settings.encoder_fingerprint == SpectralTestEncoder().fingerprint


def test_wrong_model_or_projection_for_another_model_is_refused(setup, monkeypatch, double):
    foreign = Projection(np.eye(64, dtype=np.float32), SpectralTestEncoder(seed=7).fingerprint)
    foreign_file = save_projection(foreign, setup["tmp"] / "foreign.pt")
    result = run("index", setup["audio"], "--index", setup["index"], "--projection", foreign_file)
    assert result.exit_code == 1 and "projection was trained for encoder" in result.output

    build(setup, "--projection", setup["projection_file"])
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder(seed=7))
    result = run("search", "a 500 hz tone", "--index", setup["index"])
    assert result.exit_code == 1 and "was built with model" in result.output
    assert len(result.output.strip().splitlines()) == 1
