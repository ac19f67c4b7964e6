"""Benchmark: audit queries on a synthetic index, against named baselines measured in the same run.

    .venv/bin/python benchmarks/bench_audit.py [--segments 100000] [--concepts 2000] [--per 20]
                                               [--index /tmp/clapdex-bench-audit] [--repeat 25]

Builds (or reuses) an index of N synthetic segments (10 per file, 7 s windows, K concepts, about
`per` active concepts per segment with Zipf-like popularity) through IndexStore.add_file, then
times, as p50 over `repeat` runs after warm-up:

  1. a single-concept audit            clapdex audit "c0007"     (a popular concept: ~20 % of segments)
  2. a 3-term boolean expression       clapdex audit "(c0003 OR c0011) AND NOT c0001"
     (plus rarer concepts and a weighted expression, see AUDITS)
  3. concepts --top 50                 clapdex concepts --top 50

Baselines, same answers, same run:
  - "SQL full scan": the same audit() with term lookups that cannot use an index (`concept_id + 0`);
  - "numpy pass": brute-force set evaluation over all postings already loaded in memory (the load
    itself is reported separately: it is what the brute force costs per process);
  - for concepts: rebuilding the totals from every posting (what the read would cost without the
    maintained concept_stats table) and a GROUP BY over postings (files/segments/mean/max only).
It prints each query's SQLite plan (EXPLAIN QUERY PLAN: the one SQLite-specific spot) and the cost
the concept_stats maintenance adds to add_file. The synthetic weights are not CLAP output.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from sqlalchemy import distinct, func, select

from clapdex.audit.concepts import ConceptLookup
from clapdex.audit.expression import And, Not, Term, parse, positive_terms
from clapdex.audit import queries
from clapdex.audit.queries import audit, plan_audit
from clapdex.audit.stats import prevalence, prevalence_statement
from clapdex.storage import concept_stats
from clapdex.storage.database import FileMeta, IndexSettings, IndexStore
from clapdex.storage.schema import PostingRow, SegmentRow

SEGMENTS_PER_FILE = 10
WINDOW = 7.0


def synthetic_file(rng, n_concepts, per, popularity):
    weights = np.zeros((SEGMENTS_PER_FILE, n_concepts))
    for row in weights:
        k = max(1, int(rng.poisson(per)))
        chosen = rng.choice(n_concepts, size=min(k, n_concepts), replace=False, p=popularity)
        row[chosen] = np.round(rng.exponential(0.05, len(chosen)) + 1e-4, 6)
    starts = np.arange(SEGMENTS_PER_FILE) * WINDOW
    fidelity = rng.uniform(0.2, 0.95, SEGMENTS_PER_FILE)
    ones = np.ones(SEGMENTS_PER_FILE)
    return starts, starts + WINDOW, SimpleNamespace(weights=sp.csr_matrix(weights), fidelity=fidelity,
                                                    recon_norm=ones, shift_norm=ones)


def build(path: Path, n_segments: int, n_concepts: int, per: int, dimension: int) -> float:
    rng = np.random.default_rng(0)
    names = [f"c{i:04d}" for i in range(n_concepts)]
    settings = IndexSettings(encoder_fingerprint="bench", dimension=dimension, sample_rate=48000,
                             window_seconds=WINDOW, hop_seconds=WINDOW, vocabulary_name="bench",
                             vocabulary_hash="bench", lam=0.1)
    store = IndexStore.create(path, settings, names, np.zeros((n_concepts, 4), np.float32))
    popularity = 1.0 / (np.arange(n_concepts) + 5.0) ** 0.9
    popularity /= popularity.sum()
    embeddings = rng.normal(size=(SEGMENTS_PER_FILE, dimension)).astype(np.float32)
    began = time.perf_counter()
    for f in range(n_segments // SEGMENTS_PER_FILE):
        starts, ends, dec = synthetic_file(rng, n_concepts, per, popularity)
        store.add_file(FileMeta(f"/bench/file_{f:06d}.wav", 1, 1, duration=float(ends[-1])),
                       starts, ends, embeddings, dec)
        if f % 1000 == 0:
            print(f"  building: {f * SEGMENTS_PER_FILE} segments", file=sys.stderr, flush=True)
    store.close()
    return time.perf_counter() - began


def p50(function, repeat: int) -> float:
    for _ in range(2):
        function()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def plan(store, statement) -> str:
    """SQLite's EXPLAIN QUERY PLAN for a Core statement (the dialect-specific spot)."""
    sql = str(statement.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
    return "\n".join(f"    {'  ' * (r[1] > 0)}{r[-1]}" for r in rows)


def audit_full_scan(store, expression: str):
    """The same audit() with term lookups that cannot use an index on concept_id (`+ 0`)."""
    original = queries._term_select

    def scanning_term(term, lookup):
        weight = (PostingRow.weight > 0 if term.min_weight is None
                  else PostingRow.weight >= term.min_weight)
        return select(PostingRow.segment_id.label("segment_id")).where(
            PostingRow.concept_id + 0 == lookup.id_of(term.name), weight)

    queries._term_select = scanning_term
    try:
        return audit(store, expression, limit=100)
    finally:
        queries._term_select = original


# (name, expression): the three measurements first, then less popular concepts.
AUDITS = [
    ("single concept", "c0007"),
    ("3-term boolean", "(c0003 OR c0011) AND NOT c0001"),
    ("single, rarer", "c0100"),
    ("3-term, rarer", "(c0050 OR c0120) AND NOT c0007"),
    ("3-term, weights", "c0003:0.1 AND c0011:0.05 AND NOT c0001"),
]


class InMemoryPostings:
    """Baseline: every posting in numpy arrays, expressions evaluated as sets (brute force)."""

    def __init__(self, store):
        with store.session() as session:
            rows = session.execute(select(PostingRow.concept_id, PostingRow.segment_id,
                                          PostingRow.weight)).all()
            files = session.execute(select(SegmentRow.id, SegmentRow.file_id)).all()
        con, seg, weight = (np.array(c) for c in zip(*rows))
        order = np.argsort(con, kind="stable")
        self.con, self.seg, self.weight = con[order], seg[order], weight[order]
        self.bounds = np.searchsorted(self.con, np.arange(int(self.con.max()) + 2))
        ids, file_ids = (np.array(c) for c in zip(*files))
        self.all_segments = set(ids.tolist())
        self.file_of = dict(zip(ids.tolist(), file_ids.tolist()))

    def postings(self, concept_id: int):
        lo, hi = self.bounds[concept_id], self.bounds[concept_id + 1]
        return self.seg[lo:hi], self.weight[lo:hi]

    def matches(self, node, lookup) -> set:
        if isinstance(node, Term):
            seg, weight = self.postings(lookup.id_of(node.name))
            keep = weight >= (node.min_weight if node.min_weight is not None else 0.0)
            return set(seg[keep].tolist())
        if isinstance(node, Not):
            return self.all_segments - self.matches(node.child, lookup)
        sets = [self.matches(child, lookup) for child in node.children]
        return set.intersection(*sets) if isinstance(node, And) else set.union(*sets)

    def audit(self, node, lookup):
        """(segments, files, top-100 scores) for an expression."""
        matched = self.matches(node, lookup)
        score = dict.fromkeys(matched, 0.0)
        for term in positive_terms(node):
            seg, weight = self.postings(lookup.id_of(term.name))
            for s, w in zip(seg.tolist(), weight.tolist()):
                if s in score:
                    score[s] += w
        best = sorted(score.values(), reverse=True)[:100]
        return len(matched), len({self.file_of[s] for s in matched}), best


def group_by_concepts(store, top: int):
    with store.session() as session:
        return session.execute(
            select(PostingRow.concept_id, func.count(distinct(SegmentRow.file_id)).label("files"),
                   func.count().label("segments"), func.avg(PostingRow.weight),
                   func.max(PostingRow.weight))
            .join(SegmentRow, SegmentRow.id == PostingRow.segment_id)
            .group_by(PostingRow.concept_id).order_by(func.count(distinct(SegmentRow.file_id)).desc())
            .limit(top)).all()


def maintenance_cost(root: Path, n_concepts: int, per: int, dimension: int, files: int = 300):
    """Seconds per add_file with and without the concept_stats hook (same files, fresh indexes)."""
    results = {}
    original = concept_stats.on_files_added
    for label, hook in (("with concept_stats", original), ("without (hook disabled)", lambda *a: None)):
        path = root / f"maintenance-{label.split()[0]}"
        shutil.rmtree(path, ignore_errors=True)
        concept_stats.on_files_added = hook
        try:
            rng = np.random.default_rng(1)
            names = [f"c{i:04d}" for i in range(n_concepts)]
            store = IndexStore.create(path, IndexSettings("bench", dimension, 48000, WINDOW, WINDOW,
                                                          "bench", "bench", lam=0.1),
                                      names, np.zeros((n_concepts, 4), np.float32))
            popularity = 1.0 / (np.arange(n_concepts) + 5.0) ** 0.9
            popularity /= popularity.sum()
            data = [synthetic_file(rng, n_concepts, per, popularity) for _ in range(files)]
            emb = np.zeros((SEGMENTS_PER_FILE, dimension), np.float32)
            began = time.perf_counter()
            for f, (starts, ends, dec) in enumerate(data):
                store.add_file(FileMeta(f"/m/{f}.wav", 1, 1), starts, ends, emb, dec)
            results[label] = (time.perf_counter() - began) / files * 1000
            store.close()
        finally:
            concept_stats.on_files_added = original
        shutil.rmtree(path, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=2000)
    parser.add_argument("--per", type=int, default=20, help="mean active concepts per segment")
    parser.add_argument("--dimension", type=int, default=1024, help="embedding size stored per segment")
    parser.add_argument("--index", type=Path, default=Path("/tmp/clapdex-bench-audit"))
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even if it exists")
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()

    if args.rebuild or not IndexStore.exists(args.index):
        shutil.rmtree(args.index, ignore_errors=True)
        seconds = build(args.index, args.segments, args.concepts, args.per, args.dimension)
        print(f"built {args.index} in {seconds:.1f} s")
    store = IndexStore.open(args.index)
    counts = store.counts()
    print(f"index: {counts['files']} files, {counts['segments']} segments, {counts['concepts']} "
          f"concepts, {counts['postings']} postings "
          f"({counts['postings'] / max(1, counts['segments']):.1f} per segment)")
    print(f"machine: {sys.platform}, SQLite via SQLAlchemy; p50 of {args.repeat} runs after 2 warm-ups\n")

    lookup = ConceptLookup.load(store)
    began = time.perf_counter()
    memory = InMemoryPostings(store)
    load_ms = (time.perf_counter() - began) * 1000

    rows = []
    for name, expression in AUDITS:
        result = audit(store, expression, limit=100)
        scanned = audit_full_scan(store, expression)
        brute = memory.audit(parse(expression), lookup)
        # Same answers three ways: counts, and the top rows (ties aside, by score).
        assert (result.n_segments, result.n_files) == brute[:2] == (scanned.n_segments,
                                                                    scanned.n_files), expression
        assert [m.segment_id for m in result.matches] == [m.segment_id for m in scanned.matches]
        assert np.allclose([m.score for m in result.matches], brute[2][:len(result.matches)])
        node = parse(expression)
        rows.append((f"{name}: {expression}", f"{result.n_segments} segs / {result.n_files} files",
                     p50(lambda: audit(store, expression, limit=100), args.repeat),
                     {"SQL full scan": p50(lambda: audit_full_scan(store, expression),
                                           max(3, args.repeat // 5)),
                      "numpy pass (postings in memory)": p50(lambda: memory.audit(node, lookup),
                                                             max(3, args.repeat // 5))}))

    top = prevalence(store, top=50)
    by_sql = group_by_concepts(store, 50)
    assert [r.files for r in top] == [r.files for r in by_sql]
    def rebuild_totals():
        with store.session() as session:
            concept_stats.rebuild(session)
            session.rollback()  # measure only; keep the maintained table as it is

    rows.append(("concepts --top 50", f"{len(top)} rows",
                 p50(lambda: prevalence(store, top=50), args.repeat),
                 {"rebuild totals from postings": p50(rebuild_totals, 3),
                  "SQL GROUP BY postings (no time share)": p50(lambda: group_by_concepts(store, 50), 3)}))

    print(f"{'query':<58}{'answer':<24}{'p50 ms':>8}   baseline: p50 ms (baseline / ours)")
    for name, answer, ours, baselines in rows:
        first = True
        for label, ms in baselines.items():
            head = f"{name:<58}{answer:<24}{ours:>8.1f}" if first else " " * 90
            print(f"{head}   {label}: {ms:.1f} ({ms / ours:.1f}x)")
            first = False
    print(f"{'':90}   (loading all postings into numpy first: {load_ms:.0f} ms, once)")
    print("\ntarget <= 100 ms each: " + ", ".join(
        f"{name.split(':')[0]} {'met' if ours <= 100 else 'NOT met'}" for name, _, ours, _ in rows))

    print("\nquery plans (SQLite EXPLAIN QUERY PLAN):")
    for label, text in AUDITS:
        statements = plan_audit(lookup, text, 100)
        print(f"  {label} {text!r}, count:\n{plan(store, statements.count)}")
        print(f"  {label} {text!r}, ranked rows:\n{plan(store, statements.rows)}")
    print(f"  concepts --top 50:\n{plan(store, prevalence_statement('files', 50))}")
    print("  baseline (index unusable):\n" + plan(store, select(PostingRow.segment_id).where(
        PostingRow.concept_id + 0 == lookup.id_of("c0007"))))

    cost = maintenance_cost(args.index.parent, args.concepts, args.per, args.dimension)
    print("\nadd_file cost (10 segments, ~200 postings per file, 300 files):")
    for label, ms in cost.items():
        print(f"  {label}: {ms:.2f} ms per file")
    store.close()


if __name__ == "__main__":
    main()
