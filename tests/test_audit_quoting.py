"""A concept whose name holds AND/OR/NOT ("rock and roll") typed without quotes gets a hint to quote
it (indexed with the spectral TEST DOUBLE, not CLAP)."""

from __future__ import annotations

import pytest

import clapdex
from clapdex.errors import QueryError
from tests.audio_collection import tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder


def test_unquoted_concept_with_a_keyword_suggests_quotes(tmp_path):
    write_audio(tmp_path / "audio/tone.wav", tone_mix((400,), 4.0, 8000), 8000)
    vocab = write_vocabulary(tmp_path, ["a 400 hz tone", "rock and roll", "rain"])
    with clapdex.create_index(tmp_path / "index", SpectralTestEncoder(), vocabulary=str(vocab),
                              lam=0.01) as index:
        index.add([tmp_path / "audio"])
        with pytest.raises(QueryError, match=r"unknown concept 'rock'.*the whole expression is "
                                             r"the concept 'rock and roll': put it in quotes"):
            index.audit("rock and roll")
        with pytest.raises(QueryError, match="put it in quotes"):
            index.count("rock and roll")
        assert index.count('"rock and roll"').segments >= 0  # quoted, it is one concept
        with pytest.raises(QueryError) as plain:
            index.audit("rock AND rain")  # an expression that names no concept gets no hint
        assert "quotes" not in str(plain.value)
