"""IndexStore's write transactions: the write lock and the database generation."""

from __future__ import annotations

import pytest

from clapdex.storage.database import IndexStore
from tests.search_fixtures import build_index


def test_every_write_moves_the_generation_on_and_a_failed_one_does_not(tmp_path):
    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        first = store.generation()
        assert first > 0  # one per stored file at least
        path = fixture.paths["tone_1000.wav"]
        store.update_file_stat(path, 1, 2)
        assert store.generation() == first + 1
        assert store.remove_file(path)
        assert store.generation() == first + 2
        with pytest.raises(RuntimeError):
            with store.write() as session:
                store.update_settings(session, lam=0.5)
                raise RuntimeError("rolled back")
        assert store.generation() == first + 2
        assert store.settings.lam != 0.5  # the rolled-back change is not remembered either
    with IndexStore.open(fixture.root) as reopened:
        assert reopened.generation() == first + 2
        assert reopened.settings.lam != 0.5
