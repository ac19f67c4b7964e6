"""`clapdex tune`: the knee of metric vs active concepts, the best α, and applying them to an index.

End-to-end parts use generated sine datasets and the spectral TEST DOUBLE (not CLAP).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.evaluation.representations import ConceptSetting
from clapdex.evaluation.tuning import best_alpha, choose, knee
from clapdex.evaluation.zeroshot import ZeroShotRow
from tests.doubles import SpectralTestEncoder, use_encoder
from tests.test_eval_cli import VOCAB, _dataset


@pytest.mark.parametrize("bend", [4, 8, 15])
def test_knee_finds_a_planted_knee(bend):
    """Metric rises steeply up to `bend` active concepts, then barely; the points are given out of
    order and the curve carries small noise."""
    rng = np.random.default_rng(bend)
    active = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 30, 40, 60], dtype=float)
    metric = np.where(active <= bend, 0.3 + 0.6 * active / bend, 0.9 + 0.001 * (active - bend))
    metric = metric + rng.uniform(-0.002, 0.002, len(active))
    order = rng.permutation(len(active))
    assert active[order][knee(active[order], metric[order])] == bend


def test_knee_of_a_flat_curve_is_the_sparsest():
    assert knee([20, 5, 10], [0.7, 0.7, 0.7]) == 1


def test_best_alpha_prefers_the_default_among_ties():
    alphas = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert best_alpha(alphas, [0.1, 0.5, 0.9, 0.9, 0.3, 0.2], default=0.5) == 2  # 0.4 and 0.6 tie
    assert best_alpha(alphas, [0.1, 0.5, 0.7, 0.8, 0.95, 0.2], default=0.5) == 4


def test_choose_takes_the_knee_then_the_best_alpha_there():
    def row(setting, accuracy, active=None, alpha=None):
        kind = "dense" if setting is None else ("concepts" if alpha is None else "hybrid")
        return ZeroShotRow(kind, "", None, None if setting is None else setting, accuracy, accuracy,
                           active, active, 0.9, 0.8, alpha=alpha)

    curve = [row(n, acc, n) for n, acc in [(2, 0.4), (4, 0.6), (8, 0.82), (16, 0.84), (32, 0.85)]]
    seen = []

    def hybrid(setting, alphas):
        seen.append(setting)
        return [row(setting.max_concepts, 0.9 - abs(a - 0.3), setting.max_concepts, a) for a in alphas]

    result = choose([row(None, 0.8), *curve], "accuracy", hybrid, [0.0, 0.3, 0.5, 1.0], 0.5, "t")
    assert result.setting == ConceptSetting(max_concepts=8) and seen == [result.setting]
    assert result.alpha == 0.3
    assert result.summary()["concepts"] == 0.82 and result.summary()["hybrid"] == pytest.approx(0.9)


@pytest.fixture
def spectral(monkeypatch):
    encoder = SpectralTestEncoder(dimension=64, sample_rate=8000, window_seconds=0.5)
    use_encoder(monkeypatch, lambda **_: encoder)
    return encoder


def test_tune_prints_the_curve_and_a_choice_on_the_curve(tmp_path, spectral):
    data = _dataset(tmp_path / "data")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    args = ["tune", str(data), "--prompt", "{}", "--vocab", str(tmp_path / "vocab.txt"),
            "--max-concepts", "1,2,3,5,8", "--cache-dir", str(tmp_path / "cache")]
    report = json.loads(CliRunner().invoke(main, args + ["--json"]).output)
    curve = [r for r in report["rows"] if r["representation"] == "concepts"]
    hybrid = [r for r in report["rows"] if r["representation"] == "hybrid"]
    assert [r["max_concepts"] for r in curve] == sorted(r["max_concepts"] for r in curve)
    choice = report["choice"]
    picked = knee([r["mean_active"] for r in curve], [r["accuracy"] for r in curve])
    assert choice["max_concepts"] == curve[picked]["max_concepts"] and choice["lambda"] is None
    assert [r["alpha"] for r in hybrid] == [round(0.1 * i, 1) for i in range(11)]
    assert all(r["max_concepts"] == choice["max_concepts"] for r in hybrid)
    assert choice["hybrid"] == max(r["accuracy"] for r in hybrid)
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    assert f"choice: N={choice['max_concepts']} (knee of accuracy" in text.output
    assert "to use it: clapdex reindex --max-concepts" in text.output


def test_tune_apply_reindexes_and_search_uses_the_stored_alpha(tmp_path, spectral, monkeypatch):
    import clapdex
    from clapdex.indexer import index_paths
    from clapdex.storage.database import IndexStore

    data = _dataset(tmp_path / "data")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    index = tmp_path / "index"
    index_paths([data], spectral, index, vocabulary=str(tmp_path / "vocab.txt"), show_progress=False)
    with clapdex.open_index(index, spectral) as opened:
        assert opened.search(text="440 hz").alpha == 0.5  # nothing tuned yet: DEFAULT_ALPHA
    result = CliRunner().invoke(main, ["tune", str(data), "--prompt", "{}", "--sweep", "0.02,0.1,0.3",
                                       "--alpha", "0.3,0.7", "--apply", str(index), "--no-cache",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    choice, applied = report["choice"], report["applied"]
    assert choice["alpha"] in (0.3, 0.7) and applied["alpha"] == choice["alpha"]
    assert report["vocabulary"] == "the index's (11 concepts)"
    with IndexStore.open(index) as store:
        assert store.settings.lam == choice["lambda"] and store.settings.alpha == choice["alpha"]
    with clapdex.open_index(index, spectral) as opened:
        assert opened.search(text="440 hz").alpha == choice["alpha"]
        assert opened.search(text="440 hz", alpha=0.9).alpha == 0.9  # an explicit α still wins
    other = SpectralTestEncoder(dimension=64, sample_rate=8000, window_seconds=0.5, seed=5)
    use_encoder(monkeypatch, lambda **_: other)
    refused = CliRunner().invoke(main, ["tune", str(data), "--prompt", "{}", "--apply", str(index),
                                        "--no-cache"])
    assert refused.exit_code == 1 and "was built with model" in refused.output
