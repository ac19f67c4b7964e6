"""Library errors say what is wrong and name the remedy (clapdex.errors.Remedy); the front ends
word it as the command to run: the CLI after `error: ...`, the web app in its JSON error.

Indexes are built with the TEST DOUBLE encoder (tests/doubles.py, not CLAP)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

import clapdex
from clapdex.cli import main
from clapdex.errors import (ClapdexError, IndexDamagedError, IndexMismatchError,
                            IndexNotFoundError, Remedy)
from tests.doubles import SpectralTestEncoder, use_encoder
from tests.search_fixtures import build_index

# A CLI command or option in a message: "clapdex index", "--rebuild".
CLI_WORDING = re.compile(r"clapdex [a-z]|(^|\s)--[a-z]")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("remedies"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def library_error(call) -> Exception:
    with pytest.raises(ClapdexError) as error:
        call()
    assert not CLI_WORDING.search(str(error.value)), str(error.value)
    return error.value


def test_another_model_names_the_model_remedy(fixture, monkeypatch):
    with clapdex.open_index(fixture.root, encoder=SpectralTestEncoder(seed=3)) as index:
        error = library_error(lambda: index.search(text="a 500 hz tone"))
    assert isinstance(error, IndexMismatchError)
    assert str(error).startswith(f"index {fixture.root} was built with model ")
    assert error.remedy == Remedy("model", str(fixture.root))

    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder(seed=3))
    result = run("search", "a 500 hz tone", "--index", fixture.root)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: {error}; pass the model options it was built with (--model-version, --weights, "
        "--backend; or --fingerprint, as `clapdex status` shows it), or use another --index")


def test_missing_index_names_the_create_remedy(tmp_path):
    missing = tmp_path / "nowhere"
    error = library_error(lambda: clapdex.open_index(missing).counts())
    assert isinstance(error, IndexNotFoundError) and str(error) == f"no index at {missing}"
    assert error.remedy == Remedy("create", str(missing))
    result = run("status", "--index", missing)
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: no index at {missing}; create one with: "
                                     f"clapdex index --index {missing} FOLDER")


def test_damaged_index_names_the_rebuild_remedy(tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "clapdex.sqlite").write_bytes(b"not a database\n" * 100)
    error = library_error(lambda: clapdex.open_index(damaged).counts())
    assert isinstance(error, IndexDamagedError) and error.remedy == Remedy("rebuild", str(damaged))
    result = run("concepts", "--index", damaged)
    assert result.exit_code == 1
    assert f"; rebuild it with: clapdex index --rebuild --index {damaged} FOLDER" in result.output


def test_other_lambda_names_the_reindex_remedy(fixture, tmp_path, monkeypatch):
    with clapdex.open_index(fixture.root, encoder=fixture.encoder) as index:
        error = library_error(lambda: index.add([tmp_path], lam=0.5))
    assert "lambda is 0.02, requested 0.5" in str(error)
    assert error.remedy == Remedy("reindex", str(fixture.root), ("lam",))

    use_encoder(monkeypatch, lambda **_: fixture.encoder)
    result = run("index", tmp_path, "--index", fixture.root, "--lambda", "0.5")
    assert result.exit_code == 1
    assert f"run clapdex reindex --lambda L --index {fixture.root} to re-decompose it" in result.output


def test_unknown_concept_without_close_names_lists_them(fixture):
    with clapdex.open_index(fixture.root, encoder=fixture.encoder) as index:
        error = library_error(lambda: index.audit("zzzzqqq"))
    assert error.remedy == Remedy("list-concepts")
    result = run("audit", "zzzzqqq", "--index", fixture.root)
    assert result.exit_code == 1 and "; list them with: clapdex concepts" in result.output


def test_web_app_gives_the_remedy_as_json_and_in_words(fixture):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clapdex.cli.common import remedy_text
    from clapdex.server import create_app

    with clapdex.open_index(fixture.root, encoder=SpectralTestEncoder(seed=3)) as index:
        plain = TestClient(create_app(index)).get("/api/search", params={"text": "a 500 hz tone"})
        worded = TestClient(create_app(index, remedy_text=remedy_text)).get(
            "/api/search", params={"text": "a 500 hz tone"})
    assert plain.status_code == worded.status_code == 409
    remedy = {"action": "model", "index": str(fixture.root), "settings": []}
    assert plain.json()["remedy"] == worded.json()["remedy"] == remedy
    assert not CLI_WORDING.search(plain.json()["error"])
    assert worded.json()["error"] == (plain.json()["error"] + "; "
                                      + remedy_text(Remedy("model", str(fixture.root))))
