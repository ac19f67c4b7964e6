"""IndexStore.concept_matrix() (all postings as a CSR, what opening an index for search reads)
against the former ORM-row implementation, same index, same run.

    .venv/bin/python benchmarks/bench_concept_matrix.py [--segments 100000] [--keep DIR]

Builds a synthetic index (tests/search_fixtures.build_synthetic_index: K = 2,000, 20 concepts per
segment, d = 1024; no model), then times, best of --repeat, warm page cache:
  baseline  the implementation before this benchmark: ORM session rows, zip(*rows) into arrays,
            scipy COO -> CSR;
  clapdex   IndexStore.concept_matrix(): Core select fetched as plain DBAPI tuples, one structured
            np.fromiter, CSR built from the table order.
Checks that both give the same matrix and prints the ratio baseline / clapdex.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clapdex.storage.database import IndexStore  # noqa: E402
from clapdex.storage.schema import ConceptRow, PostingRow, SegmentRow  # noqa: E402
from tests.search_fixtures import build_synthetic_index  # noqa: E402


def orm_rows_baseline(store: IndexStore) -> tuple[np.ndarray, sp.csr_matrix]:
    """concept_matrix as it was: every posting as a SQLAlchemy Row through an ORM session."""
    with store.session() as session:
        ids = np.fromiter(session.scalars(select(SegmentRow.id).order_by(SegmentRow.id)),
                          dtype=np.int64)
        postings = session.execute(
            select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight)).all()
        n_concepts = session.scalar(select(func.count()).select_from(ConceptRow)) or 0
    seg, con, weight = (np.asarray(col) for col in zip(*postings))
    rows = np.searchsorted(ids, seg.astype(np.int64))
    return ids, sp.csr_matrix((np.asarray(weight, dtype=np.float64), (rows, con)),
                              shape=(len(ids), n_concepts))


def best_of(function, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=2_000)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="Build the synthetic index in DIR and reuse it on later runs.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-concept-matrix-") as tmp:
        index = Path(args.keep) if args.keep else Path(tmp) / "index"
        if not IndexStore.exists(index):
            began = time.perf_counter()
            build_synthetic_index(index, args.segments, args.concepts, args.dimension)
            print(f"built {args.segments:,} segments in {time.perf_counter() - began:.1f} s")
        with IndexStore.open(index) as store:
            store.concept_matrix()  # warm the page cache for both
            base_s, (base_ids, base) = best_of(lambda: orm_rows_baseline(store), args.repeat)
            ours_s, (ids, ours) = best_of(store.concept_matrix, args.repeat)
        assert np.array_equal(ids, base_ids) and (ours != base).nnz == 0, "matrices differ"
        print(f"{len(ids):,} segments, {ours.nnz:,} postings, K = {ours.shape[1]:,}")
        print(f"  baseline (ORM rows)        {base_s:6.2f} s")
        print(f"  clapdex concept_matrix()   {ours_s:6.2f} s")
        print(f"  ratio baseline / clapdex   {base_s / ours_s:6.2f}")


if __name__ == "__main__":
    main()
