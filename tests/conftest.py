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
