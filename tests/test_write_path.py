"""The store's bulk write path (issue 14): postings are written in (concept, segment) order by
one raw bulk statement (SQLite executemany, PostgreSQL COPY), and `counts()` takes segments and
postings from the totals every write keeps. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sqlalchemy import func, select

from clapdex.storage import concept_stats
from clapdex.storage.database import FileMeta, IndexSettings, IndexStore, NewFile
from clapdex.storage.schema import ConceptStatsRow, PostingRow, SegmentRow

K, DIM = 7, 8


class _Decomposition:
    def __init__(self, weights):
        n = weights.shape[0]
        self.weights = weights
        self.fidelity = np.full(n, 0.9)
        self.concept_fidelity = np.full(n, 0.8)
        self.recon_norm = np.ones(n)
        self.shift_norm = np.ones(n)


def _file(rng, number: int, n: int, density: float) -> NewFile:
    weights = sp.random(n, K, density=density, format="csr", random_state=rng,
                        data_rvs=lambda size: rng.exponential(0.1, size) + 1e-3)
    if number == 1 and n:
        weights = weights.tolil()
        weights[0, 3] = 0.0  # an explicit zero: never a posting
        weights = weights.tocsr()
    meta = FileMeta(path=f"/synthetic/file_{number}.wav", size=1, mtime_ns=1, duration=n * 7.0)
    starts = np.arange(n) * 7.0
    embeddings = rng.standard_normal((n, DIM)).astype(np.float32)
    return NewFile(meta, starts, starts + 7.0, embeddings, _Decomposition(weights))


def _max_weights_agree(store) -> bool:
    """`concepts`' max weight (kept in concept_stats, looked up where unknown) = the postings'."""
    from clapdex.audit.stats import prevalence

    with store.session() as session:
        exact = dict(session.execute(select(PostingRow.concept_id, func.max(PostingRow.weight))
                                     .group_by(PostingRow.concept_id)).all())
    shown = {r.concept_id: r.max_weight for r in prevalence(store)}
    return shown == exact and len(exact) > 0


def _exact_counts(store) -> tuple[int, int]:
    with store.session() as session:
        return (session.scalar(select(func.count()).select_from(SegmentRow)),
                session.scalar(select(func.count()).select_from(PostingRow)))


def test_postings_round_trip_and_counts_follow_every_write(tmp_path, backend):
    rng = np.random.default_rng(3)
    settings = IndexSettings(encoder_fingerprint="test-double", dimension=DIM, sample_rate=16000,
                             window_seconds=7.0, hop_seconds=7.0, vocabulary_name="t",
                             vocabulary_hash="t", lam=0.05, audio_mean=np.zeros(DIM, np.float32))
    names = [f"concept {i}" for i in range(K)]
    # file 2 has segments without any concept; file 3 has no posting at all (an empty insert)
    files = [_file(rng, 0, 40, 0.4), _file(rng, 1, 25, 0.5), _file(rng, 2, 10, 0.05),
             _file(rng, 3, 5, 0.0)]
    with IndexStore.create(tmp_path / "index", settings, names,
                           rng.standard_normal((K, DIM)).astype(np.float32)) as store:
        stored = store.add_files(files)
        ids, matrix = store.concept_matrix()
        expected = {}
        for (_, segment_ids), item in zip(stored, files):
            coo = sp.coo_matrix(item.decomposition.weights)
            for row, col, value in zip(coo.row, coo.col, coo.data):
                if value > 0:
                    expected[(int(segment_ids[row]), int(col))] = float(value)
        with store.session() as session:
            rows = session.execute(select(PostingRow.segment_id, PostingRow.concept_id,
                                          PostingRow.weight)).all()
        assert {(s, c): w for s, c, w in rows} == expected and len(rows) == len(expected)
        assert matrix.nnz == len(expected) and len(ids) == 80
        assert (store.counts()["segments"], store.counts()["postings"]) == _exact_counts(store) \
            == (80, len(expected))
        assert _max_weights_agree(store)

        assert store.remove_file("/synthetic/file_1.wav")
        store.copy_file("/synthetic/file_0.wav", FileMeta(path="/synthetic/copy.wav", size=1,
                                                          mtime_ns=1))
        counts = store.counts()
        assert (counts["segments"], counts["postings"]) == _exact_counts(store)
        assert counts["segments"] == 80 - 25 + 40 and counts["files"] == 4
        assert _max_weights_agree(store)  # file 1 held the largest weight of some concepts
        with store.session() as session:
            assert None in set(session.scalars(select(ConceptStatsRow.max_weight)))

        with store.write() as session:  # stale totals (as after a re-decomposition): counted
            concept_stats.invalidate(session)
        with store.session() as session:
            assert concept_stats.stored_counts(session) is None
        counts = store.counts()
        assert (counts["segments"], counts["postings"]) == _exact_counts(store)
        assert _max_weights_agree(store)  # rebuilt (ensure_fresh), or computed when read-only
