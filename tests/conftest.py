"""Shared test setup and fixtures.

Tests never touch the network: before anything imports huggingface_hub or transformers, the hub is
switched off and its cache (and clapdex's own cache) point at empty temporary folders, so no test can
download a model or pick up one that happens to be cached on the machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
_SANDBOX = Path(tempfile.mkdtemp(prefix="clapdex-tests-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_SANDBOX / "hf-home")
os.environ["CLAPDEX_CACHE_DIR"] = str(_SANDBOX / "clapdex-cache")
for _name in ("CLAPDEX_MODEL_VERSION", "CLAPDEX_CLAP_WEIGHTS", "CLAPDEX_TEXT_MODEL", "CLAPDEX_DEVICE",
              "CLAPDEX_ENCODER", "CLAPDEX_INDEX", "HF_HUB_CACHE"):
    os.environ.pop(_name, None)  # the developer's own settings must not leak into tests
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))  # so tests can `import tests.doubles`, `tests.clap_fixtures`

import pytest  # noqa: E402

from tests.clap_fixtures import RandomClapFiles, make_random_clap_files  # noqa: E402
from tests.doubles import SpectralTestEncoder  # noqa: E402


@pytest.fixture
def test_encoder() -> SpectralTestEncoder:
    """The fast spectral TEST DOUBLE (not CLAP) for behaviour tests."""
    return SpectralTestEncoder()


@pytest.fixture(scope="session")
def random_clap_files(tmp_path_factory) -> RandomClapFiles:
    """A random-weights msclap 2023 checkpoint + tiny GPT-2 folder, built once per session (~5 s)."""
    return make_random_clap_files(tmp_path_factory.mktemp("clap-random"))


@pytest.fixture(scope="session")
def random_clap_encoder(random_clap_files):
    """A loaded ClapEncoder (real msclap code, RANDOM weights) on cpu, offline. Shared by the whole
    session: don't change its attributes; use copy.copy(encoder) to vary batch_size."""
    from clapdex.encoder import ClapEncoder

    encoder = ClapEncoder(version="2023", weights=random_clap_files.weights,
                          text_model=random_clap_files.text_model, device="cpu", batch_size=4)
    return encoder.load()


# ---- database back ends ----------------------------------------------------------------------
# The storage, indexer, search and audit tests run on SQLite and on a real PostgreSQL server
# (tests/postgres.py). In those modules every index a test creates in this process gets a fresh
# PostgreSQL database for the "postgres" run; module-scoped fixtures that build an index take
# `backend` so they are built once per back end. Without a server the PostgreSQL runs skip with
# the reason, unless CLAPDEX_REQUIRE_POSTGRES=1 (CI), where they fail.

BACKEND_MODULES = {"test_storage", "test_indexer", "test_search", "test_audit", "test_audit_files",
                   "test_postings", "test_dense", "test_concurrency", "test_roots",
                   "test_write_path", "test_damaged_audio"}


def pytest_generate_tests(metafunc):
    if ("backend" in metafunc.fixturenames
            and metafunc.module.__name__.rsplit(".", 1)[-1] in BACKEND_MODULES
            and metafunc.definition.get_closest_marker("sqlite_only") is None):
        metafunc.parametrize("backend", ["sqlite", "postgres"], indirect=True, scope="module")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test is about the SQLite file itself")


@pytest.fixture(scope="session")
def postgres_server():
    """The session's throw-away PostgreSQL server (started on first use)."""
    from tests.postgres import REQUIRE_ENV, PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
    except (PostgresUnavailable, OSError, ImportError) as error:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but cannot start: {error}")
        pytest.skip(f"no PostgreSQL server can be started here: {error}")
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def backend(request):
    """"sqlite" or "postgres": where the indexes created by this module's tests keep their data."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        yield name
        return
    server = request.getfixturevalue("postgres_server")
    from clapdex.storage.database import IndexStore

    create = IndexStore.create.__func__

    def create_on_postgres(cls, root, settings, concept_names, concept_embeddings,
                           database_url=None):
        return create(cls, root, settings, concept_names, concept_embeddings,
                      database_url=database_url or server.new_database_url())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IndexStore, "create", classmethod(create_on_postgres))
        yield name
