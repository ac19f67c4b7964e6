"""`clapdex index --database-url` on a real PostgreSQL server (tests/postgres.py), and the
one-line errors for URLs that cannot be used (these need no server)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.storage.database import IndexStore
from tests.audio_collection import make_collection, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder


@pytest.fixture(autouse=True)
def encoders(monkeypatch):
    use_encoder(monkeypatch, lambda **options: SpectralTestEncoder())


@pytest.fixture
def setup(tmp_path):
    make_collection(tmp_path / "audio")
    return {"audio": tmp_path / "audio", "index": tmp_path / "index",
            "vocab": str(write_vocabulary(tmp_path))}


def run(*args, **env):
    return CliRunner().invoke(main, [str(a) for a in args], env=env or None)


def test_index_on_postgres_then_rebuild_keeps_it_there(setup, postgres_server):
    url = postgres_server.new_database_url()
    result = run("index", setup["audio"], "--index", setup["index"], "--vocab", setup["vocab"],
                 "--json", CLAPDEX_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 5
    assert (setup["index"] / "database.url").read_text().strip() == url
    assert not (setup["index"] / "clapdex.sqlite").exists()   # the data lives in the server
    status = json.loads(run("status", "--index", setup["index"], "--json").stdout)
    assert status["counts"]["files"] == 5 and status["disk"]["database_bytes"] > 0
    assert status["database"].startswith("postgresql+psycopg://")
    assert run("doctor", "--index", setup["index"]).exit_code == 0

    again = run("index", setup["audio"], "--index", setup["index"], "--vocab", setup["vocab"],
                "--rebuild", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["added"] == 5                # everything stored afresh...
    assert (setup["index"] / "database.url").read_text().strip() == url   # ...in the same place
    with IndexStore.open(setup["index"]) as store:
        assert store.counts()["files"] == 5 and store.engine.dialect.name == "postgresql"
    assert run("doctor", "--index", setup["index"]).exit_code == 0


def test_another_database_for_an_existing_index_is_refused(setup, postgres_server):
    first, second = postgres_server.new_database_url(), postgres_server.new_database_url()
    assert run("index", setup["audio"], "--index", setup["index"], "--vocab", setup["vocab"],
               "--database-url", first).exit_code == 0
    result = run("index", setup["audio"], "--index", setup["index"], "--database-url", second)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "keeps its data in" in result.output
    # A second index into a database that already holds one is refused too.
    other = run("index", setup["audio"], "--index", setup["index"].parent / "other",
                "--vocab", setup["vocab"], "--database-url", first)
    assert other.exit_code == 1 and "already holds an index" in other.output
    assert not (setup["index"].parent / "other" / "database.url").exists()


@pytest.mark.parametrize("url, words", [
    ("postgresql+nosuchdriver://u@localhost/db", "no SQLAlchemy dialect"),
    ("not a url at all", "not a usable database URL"),
    ("postgresql+pg8000://u@localhost/db", "driver"),  # a driver this venv does not have
])
def test_unusable_urls_are_one_line_errors(setup, url, words):
    result = run("index", setup["audio"], "--index", setup["index"], "--vocab", setup["vocab"],
                 "--database-url", url)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and words in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not IndexStore.exists(setup["index"])


def test_a_url_file_naming_a_missing_driver_is_one_line(setup):
    setup["index"].mkdir()
    (setup["index"] / "database.url").write_text("postgresql+pg8000://u@localhost/db\n")
    result = run("status", "--index", setup["index"])
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert result.output.count("\n") == 1, result.output
