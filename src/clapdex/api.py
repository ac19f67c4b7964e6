"""The Python API: one `Index` object per index with a method per verb, and the verbs that need
no index (explain a file, evaluate, fine-tune, check the model). The CLI and the web app are thin
layers over this module: parse, make one call here, format.

    import clapdex
    with clapdex.open_index("~/sounds-index") as index:
        for hit in index.search(text="glass breaking", k=5):
            print(hit.path, hit.start, hit.end, hit.score, hit.explanation.contributions[:3])

Encoders: every function takes `encoder` (an Encoder, or a zero-argument callable returning one,
called only when the model is needed) or, when it is None, the encoder options (`model_version`,
`weights`, `text_model`, `device`, `batch_size`) for `clapdex.encoder_registry.load` (the encoder
named by $CLAPDEX_ENCODER, else the CLAP model). Long calls take `progress`, a callback receiving
clapdex.progress.ProgressEvent (None: silent). Results are dataclasses; `clapdex.to_jsonable`
turns any of them into the JSON the CLI's --json prints.

Threads: an Index may be shared between threads for reads (search, similar, the audit verbs):
its lazy parts (the database handle, the search state, the model) are built once, under a lock;
each search uses one immutable search state (that of the database generation it started at), and
the model embeds one query at a time. report / report_html draw with pyplot, whose state is
global: call them from one thread at a time. A write (add, reindex, import_embeddings, doctor
--repair) drops the cached state afterwards, so later reads see the new contents; do not write
through an Index while other threads read it (other processes may write: searches follow).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clapdex import encoder_registry
from clapdex.defaults import DEFAULT_ALPHA
from clapdex.errors import ClapdexError, IndexMismatchError, QueryError
from clapdex.progress import Progress, ProgressCallback
from clapdex.sparsity import Sparsity
from clapdex.storage.database import IndexSettings, IndexStore

EncoderSource = Any  # an Encoder, a zero-argument callable returning one, or None

TEST_TEXT = "a dog barking"  # what check_model embeds


def _make_encoder(source: EncoderSource, options: dict):
    if source is None:
        return encoder_registry.load(**options)
    if callable(source) and not hasattr(source, "embed_text"):
        return source()
    return source


def _as_projection(projection):
    """A Projection, a projection file's path, or None."""
    if projection is None:
        return None
    from clapdex.projection import Projection, load_projection

    return projection if isinstance(projection, Projection) else load_projection(projection)


# ---- result types that are new here (the others come from the modules that make them) ----------

@dataclass
class MatchCount:
    """How many segments, in how many files, match an audit expression."""

    segments: int
    files: int


@dataclass
class PoorlyExplainedResult:
    """Segments whose fidelity is below a threshold: `total` of them, the lowest `segments` listed."""

    total: int
    below: float
    segments: list = field(default_factory=list)   # audit.queries.PoorlyExplained, lowest first


@dataclass
class FlaggedResult:
    """`audit --flag`: `total` flagged files ("truncated") or segments ("silent", "clipped") in
    `files` files; `rows` lists the first ones in path and time order (audit.queries.FlaggedFile
    or FlaggedSegment)."""

    flag: str
    total: int
    files: int
    rows: list = field(default_factory=list)


# ---- the index ---------------------------------------------------------------------------------

class Index:
    """One index folder. `open_index` opens an existing one, `create_index` makes a new one;
    `add` and `import_embeddings` also create it when it does not exist yet (with the settings
    they are given). Scoring state is loaded on the first search and kept until the next write
    through this object (or `refresh()`): files indexed by another process show after that."""

    def __init__(self, path: str | os.PathLike, encoder: EncoderSource = None, **encoder_options):
        unknown = sorted(set(encoder_options) - set(encoder_registry.OPTIONS))
        if unknown:
            raise TypeError(f"unknown encoder option(s): {', '.join(unknown)}")
        self.path = Path(path).expanduser()
        self._encoder_source = encoder
        self._encoder_options = encoder_options
        self._lock = threading.RLock()
        self._store: IndexStore | None = None
        self._searcher_state = None
        self._model = None

    # ---- lazy parts (built once, under the lock) ----

    @property
    def store(self) -> IndexStore:
        """The open database (read access; IndexNotFoundError when there is no index)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = IndexStore.open(self.path)
        return self._store

    def model(self):
        """The encoder (not projected), made on first use."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = _make_encoder(self._encoder_source, self._encoder_options)
        return self._model

    @property
    def _searcher(self):
        if self._searcher_state is None:
            with self._lock:
                if self._searcher_state is None:
                    from clapdex.search import Searcher

                    self._searcher_state = Searcher(self.store, self.model)
        return self._searcher_state

    def refresh(self) -> None:
        """Forget the cached database handle and search state (they are reopened on next use)."""
        with self._lock:
            store, self._store, self._searcher_state = self._store, None, None
            if store is not None:
                store.close()

    def close(self) -> None:
        self.refresh()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exists(self) -> bool:
        return IndexStore.exists(self.path)

    @property
    def settings(self) -> IndexSettings:
        return self.store.settings

    def counts(self) -> dict:
        return self.store.counts()

    def index_encoder(self, projection=None, use_stored: bool = True):
        """The encoder whose audio embeddings this index holds: the model, projected by
        `projection` (a Projection or its file) if given, else by the projection the index
        stores (if it exists and has one; not with use_stored=False). A projection that differs
        from the stored one is refused (IndexMismatchError)."""
        from clapdex.projection import encoder_for_index

        encoder = self.model()
        projection = _as_projection(projection)
        settings = None
        if use_stored and IndexStore.exists(self.path):
            with IndexStore.open(self.path) as store:
                settings = store.settings
        return encoder_for_index(encoder, settings, projection, self.path)

    # ---- building and looking after the index ----

    def add(self, paths: Sequence[str | os.PathLike], *, vocabulary: str | None = None,
            lam: float | None = None, max_concepts: int | None = None,
            hop_seconds: float | None = None, faiss_factory: str | None = None,
            projection=None, prune: bool = False, rebuild: bool = False, workers: int = 2,
            database_url: str | None = None, roots: Sequence[str | os.PathLike] = (),
            progress: ProgressCallback | None = None):
        """Index the audio files under `paths` (`clapdex index`): only new or changed files are
        decoded and embedded. `roots` ("NAME=PATH", or a PATH named after its folder) defines
        named roots first, or moves them (see `set_root`). A new index takes the settings given (defaults: the built-in
        vocabulary, DEFAULT_LAMBDA, hop = window, Flat FAISS, the projection if given); an
        existing one must match those given (IndexMismatchError). `prune` removes indexed files
        under `paths` that are gone; `rebuild` deletes the index's data first (the stored
        projection is not kept; where the data lives is). `database_url` (e.g.
        postgresql+psycopg://...) keeps a new index's data in that database (docs/indexing.md).
        Returns indexer.IndexSummary (bad files are in `.skipped`)."""
        from clapdex.indexer import index_paths

        encoder = self.index_encoder(projection, use_stored=not rebuild)
        self.refresh()  # no open handle while writing (a rebuild deletes the database)
        try:
            return index_paths(paths, encoder, self.path, vocabulary=vocabulary,
                               sparsity=Sparsity(lam, max_concepts), hop_seconds=hop_seconds,
                               prune=prune,
                               rebuild=rebuild, faiss_factory=faiss_factory, workers=workers,
                               show_progress=False, progress=progress,
                               database_url=database_url, roots=roots)
        finally:
            self.refresh()

    def reindex(self, *, lam: float | None = None, max_concepts: int | None = None,
                vocabulary: str | None = None, recompute_mean: bool = False,
                progress: ProgressCallback | None = None):
        """Re-decompose the stored embeddings with a new λ, max-concepts or vocabulary (no audio
        is decoded; a new vocabulary needs the model's text side). Returns ReindexSummary."""
        from clapdex.indexer import reindex

        encoder = self.index_encoder() if vocabulary is not None else None
        self.refresh()
        try:
            return reindex(self.path, sparsity=Sparsity(lam, max_concepts), vocabulary=vocabulary,
                           encoder=encoder, recompute_mean=recompute_mean, show_progress=False,
                           progress=progress)
        finally:
            self.refresh()

    def import_embeddings(self, embeddings, manifest, *, fingerprint: str | None = None,
                          vocabulary: str | None = None, lam: float | None = None,
                          max_concepts: int | None = None, faiss_factory: str | None = None,
                          roots: Sequence[str | os.PathLike] = (),
                          progress: ProgressCallback | None = None):
        """Index precomputed window embeddings: `embeddings` an (n, d) array or a .npy file,
        `manifest` a FILES.csv path or its rows (indexer.read_manifest). `fingerprint` names the
        model that made them; without it (or to create the index) the model is loaded. `roots`
        ("NAME=PATH" or "PATH") are defined first, as for `add`."""
        from clapdex.indexer import import_embeddings, read_manifest

        if isinstance(embeddings, (str, os.PathLike)):
            try:
                embeddings = np.load(embeddings, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ClapdexError(f"{os.fsdecode(embeddings)}: not a readable .npy array "
                                   f"({error})") from None
        if isinstance(manifest, (str, os.PathLike)):
            manifest = read_manifest(manifest)
        # The model is loaded only where it is needed: to create an index, or to learn the fingerprint.
        needs_model = fingerprint is None or not IndexStore.exists(self.path)
        encoder = self.model() if needs_model else None
        self.refresh()
        try:
            return import_embeddings(self.path, embeddings, manifest, fingerprint=fingerprint,
                                     encoder=encoder, vocabulary=vocabulary,
                                     sparsity=Sparsity(lam, max_concepts),
                                     faiss_factory=faiss_factory, roots=roots,
                                     show_progress=False, progress=progress)
        finally:
            self.refresh()

    def roots(self) -> list:
        """The index's named roots (`clapdex roots`): name, stored location, where it is for this
        process ($CLAPDEX_ROOT_<NAME> wins), whether that folder exists, files stored under it.
        Returns storage.roots.RootInfo rows."""
        from clapdex.storage.roots import describe

        return describe(self.store)

    def set_root(self, name: str, location: str | os.PathLike):
        """Define the root `name` at `location` (an existing folder), or move it there: files under
        a root are stored relative to it, so moving it changes no file row (an index copied to
        a machine that mounts the collection elsewhere needs only this). Files stored with
        absolute paths under `location` become relative to it. Returns its RootInfo."""
        from clapdex.storage.roots import describe

        with self._writing() as store:
            store.set_root(name, location)
            return next(info for info in describe(store) if info.name == name)

    def remove_root(self, name: str) -> int:
        """Forget the root `name`; its files get absolute paths again. Returns how many."""
        with self._writing() as store:
            return store.remove_root(name)

    @contextmanager
    def _writing(self):
        """The index opened for a change of its file rows. If the change deleted segments (a
        file indexed both with and without a root keeps one row), the FAISS file follows."""
        from clapdex.storage.dense import DenseIndex

        self.refresh()
        try:
            with IndexStore.open(self.path, write=True) as store:
                before = store.counts()["segments"]
                yield store
                if store.counts()["segments"] != before and store.faiss_path.exists():
                    DenseIndex.open(store)  # synced with the database and saved
        finally:
            self.refresh()

    def status(self):
        """Settings, counts, files that could not be indexed, sizes on disk (`clapdex status`).
        Returns storage.health.IndexStatus."""
        from clapdex.storage.health import index_status

        return index_status(self.path)

    def doctor(self, repair: bool = False):
        """Check database and FAISS agree, indexed files exist, no orphan rows; `repair` rebuilds
        the FAISS file and deletes orphan rows. Returns storage.health.DoctorReport (`ok` is False
        while a problem remains)."""
        from clapdex.storage.health import doctor

        if repair:
            self.refresh()
        try:
            return doctor(self.path, repair=repair)
        finally:
            if repair:
                self.refresh()

    # ---- search ----

    def search(self, text: str | None = None, audio: str | os.PathLike | None = None,
               concepts: Sequence[str | tuple[str, float]] = (), mode: str | None = None,
               k: int = 10, offset: int = 0, min_score: float | None = None,
               path: str | Sequence[str] | None = None, segments: bool = False,
               alpha: float | None = None, vector: np.ndarray | None = None,
               include_self: bool = False):
        """Search by one of `text`, `audio` (an audio file, or an indexed file named as
        `clapdex show` takes it, e.g. by the end of its path; an indexed file's stored embeddings
        are used, and `results.query.audio_file` names it) or
        `vector` (a raw embedding from the index's model, projected if the index has a
        projection), optionally steered by `concepts`
        ("dog", "-speech", "rain:0.5" or (name, weight) pairs); or by `concepts` alone.

        mode: "hybrid" (default with a text/audio/vector query), "dense" or "concept" (default and
        only choice for concept-only queries). k results after skipping `offset`; `min_score`
        drops weaker results; `path` is a glob on file paths, or a list of globs (a file matching
        any of them is kept; case and Unicode normalisation are ignored; '[[]' matches a literal
        '['; a '[' that opens no set is a QueryError); `segments=True` ranks segments
        instead of files; `alpha` is the dense weight of the hybrid score (None: the index's
        tuned α, stored by `tune(apply=...)`, else DEFAULT_ALPHA). An indexed query file is
        left out of its own results unless `include_self`. Each result's `missing` says whether
        its file is gone from disk, and its `flags` the segment's "silent" / "clipped" flags
        (both read for the results returned only). Returns SearchResults.
        """
        return self._searcher.search(text=text, audio=audio, concepts=concepts, mode=mode, k=k,
                                     offset=offset, min_score=min_score, path=path,
                                     segments=segments, alpha=alpha, vector=vector,
                                     include_self=include_self)

    def similar(self, audio: str | os.PathLike, **options):
        """Files that sound like `audio` (same as search(audio=...)): an indexed file is left out
        of its own results unless include_self=True."""
        return self.search(audio=audio, **options)

    def explain(self, file: str | os.PathLike, *, lam: float | None = None,
                max_concepts: int | None = None, vocabulary: str | None = None, top: int = 5,
                projection=None):
        """The concepts of each window of an audio file (indexed or not), decomposed with this
        index's vocabulary (or `vocabulary`), λ / max-concepts (or those given), audio mean and
        projection. Returns a list of concepts.explain.WindowExplanation."""
        return explain_file(file, index=self, lam=lam, max_concepts=max_concepts,
                            vocabulary=vocabulary, top=top, projection=projection)

    # ---- audit ----

    def concepts(self, top: int | None = None, sort: str = "files") -> list:
        """Prevalence of each active concept (files, segments, share of time, mean/max weight),
        sorted by files, segments, time or weight. Returns audit.stats.ConceptPrevalence rows."""
        from clapdex.audit.stats import prevalence

        return prevalence(self.store, top=top, sort=sort)

    def audit(self, expression: str, limit: int | None = 100):
        """Segments matching a concept expression ("siren AND NOT music", "dog:0.2 OR cat"),
        the best `limit` (None: all) listed. Returns audit.queries.AuditResult."""
        from clapdex.audit.queries import audit

        return audit(self.store, expression, limit=limit)

    def count(self, expression: str) -> MatchCount:
        """How many segments (in how many files) match a concept expression."""
        from clapdex.audit.queries import count_matches

        return MatchCount(*count_matches(self.store, expression))

    def cooccurrence(self, concept: str | None = None, min_count: int = 3,
                     limit: int | None = 100) -> list:
        """Concept pairs that occur together more than chance in at least `min_count` segments;
        with `concept` (one name) only its partners. Returns audit.cooccurrence.Pair rows."""
        from clapdex.audit.cooccurrence import all_pairs, partners

        if concept:
            return partners(self.store, self._one_concept(concept), min_count=min_count,
                            limit=limit)
        return all_pairs(self.store, min_count=min_count, limit=limit)

    def _one_concept(self, text: str) -> str:
        """One concept name, quoted or not; an expression is refused."""
        from clapdex.audit.concepts import ConceptLookup, UnknownConceptError
        from clapdex.audit.expression import ExpressionError, Term, parse

        try:
            node = parse(text)
        except ExpressionError:
            node = None
        if isinstance(node, Term) and node.min_weight is None:
            return node.name
        try:  # a vocabulary name that reads as an expression, e.g. rock and roll
            ConceptLookup.load(self.store).id_of(text)
            return text
        except UnknownConceptError:
            raise QueryError(f"--cooccur takes one concept name, not {text!r}") from None

    def poorly_explained(self, below: float = 0.5, limit: int | None = 50) -> PoorlyExplainedResult:
        """Segments whose fidelity is below `below` (sounds the vocabulary misses), lowest first."""
        from clapdex.audit.queries import poorly_explained

        total, rows = poorly_explained(self.store, below=below, limit=limit)
        return PoorlyExplainedResult(total=total, below=below, segments=rows)

    def flagged(self, flag: str, limit: int | None = 100) -> FlaggedResult:
        """Damaged and silent audio: the files flagged "truncated" (indexed with what decoded,
        with their warning) or the segments flagged "silent" or "clipped" (docs/indexing.md)."""
        from clapdex.audit.queries import flagged

        total, files, rows = flagged(self.store, flag, limit=limit)
        return FlaggedResult(flag=flag, total=total, files=files, rows=rows)

    def duplicates(self, threshold: float | None = None, near: bool = True) -> list:
        """Exact copies (same content) and, with `near`, near-duplicates (the same audio in another
        format, level or trim: file-vector cosine ≥ `threshold`, default
        audit.duplicates.DEFAULT_THRESHOLD). Returns audit.duplicates.Duplicate pairs."""
        from clapdex.audit.duplicates import DEFAULT_THRESHOLD, find_duplicates

        return find_duplicates(self.store, DEFAULT_THRESHOLD if threshold is None else threshold,
                               near=near)

    def file(self, name: str, top: int = 5):
        """One file's concept profile over time (`clapdex show`): `name` is a path or the end of
        one indexed path. Returns audit.queries.FileProfile."""
        from clapdex.audit.queries import file_profile

        return file_profile(self.store, name, top=top)

    # ---- records by id (what the web app links to) ----

    def concept_names(self) -> list[str]:
        """The vocabulary, in concept-id order."""
        return self.store.concept_names()

    def file_info(self, file_id: int):
        """One file by id: path, status, error, duration, sample rate, channels, size, segments
        (storage.records.FileRecord; NotFoundError when there is none)."""
        from clapdex.storage.records import file_record

        return file_record(self.store, file_id)

    def files(self, status: str | None = None, offset: int = 0, limit: int | None = None) -> list:
        """Files in id order (only those with `status`, "indexed" or "error", if given)."""
        from clapdex.storage.records import file_records

        return file_records(self.store, status=status, offset=offset, limit=limit)

    def segment(self, segment_id: int):
        """One segment by id: its file (id and path), start and end (storage.records.SegmentRecord)."""
        from clapdex.storage.records import segment_record

        return segment_record(self.store, segment_id)

    def report(self, output: str | os.PathLike, top: int = 20, n_files: int = 3) -> dict:
        """Write a self-contained HTML report to `output`; returns its summary (files, segments)."""
        from clapdex.audit.report import write_report

        return write_report(self.store, output, top=top, n_files=n_files)

    def report_html(self, top: int = 20, n_files: int = 3) -> str:
        """The same report as an HTML string, written nowhere (the web app serves it)."""
        from clapdex.audit.report import build_report

        return build_report(self.store, top=top, n_files=n_files)[0]


ClapdexIndex = Index  # the name of this class before it had a method per verb


def open_index(path: str | os.PathLike, encoder: EncoderSource = None, **encoder_options) -> Index:
    """Open the existing index at `path` (IndexNotFoundError when there is none).

    encoder: an Encoder, or a zero-argument callable returning one (called only when a query needs
    the model), or None to load the encoder named by $CLAPDEX_ENCODER (else CLAP, options from the
    environment) with `encoder_options` on first need. Its fingerprint must match the index's, else
    IndexMismatchError; an index built with a projection applies its stored projection to it
    (text queries are not projected).
    """
    index = Index(path, encoder, **encoder_options)
    index.store  # noqa: B018  (opens now: a missing or damaged index fails here)
    return index


def create_index(path: str | os.PathLike, encoder: EncoderSource = None, *,
                 vocabulary: str | None = None, lam: float | None = None,
                 max_concepts: int | None = None, hop_seconds: float | None = None,
                 faiss_factory: str | None = None, projection=None, rebuild: bool = False,
                 **encoder_options) -> Index:
    """Create an empty index at `path` with these settings (the model embeds the vocabulary's
    concepts now). An index already there is kept if it has the settings given (else
    IndexMismatchError); `rebuild` deletes it first."""
    from clapdex.indexer.opening import open_index as open_for_writing

    index = Index(path, encoder, **encoder_options)
    encoder = index.index_encoder(projection, use_stored=not rebuild)
    open_for_writing(index.path, encoder, vocabulary=vocabulary,
                     sparsity=Sparsity(lam, max_concepts), hop_seconds=hop_seconds,
                     faiss_factory=faiss_factory, rebuild=rebuild).close()
    return index


# ---- verbs without an index ----------------------------------------------------------------------

def explain_file(file: str | os.PathLike, encoder: EncoderSource = None, *,
                 index: Index | str | os.PathLike | None = None, lam: float | None = None,
                 max_concepts: int | None = None, vocabulary: str | None = None, top: int = 5,
                 projection=None, **encoder_options) -> list:
    """The concepts of each window of an audio file, their weights and the fidelity
    (`clapdex explain`). With `index`: its vocabulary (unless `vocabulary`), λ / max-concepts
    (unless given), audio mean μ_A and projection; without: the built-in vocabulary (or
    `vocabulary`), DEFAULT_LAMBDA and the audio mean of clapdex's reference signals.
    Returns a list of concepts.explain.WindowExplanation (the top `top` concepts each)."""
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.explain import explain_file as explain_windows
    from clapdex.concepts.vocabulary import load_vocabulary

    sparsity = Sparsity(lam, max_concepts)  # refuse both before the model loads
    if index is not None and not isinstance(index, Index):
        with Index(index, encoder, **encoder_options) as opened:
            return explain_file(file, index=opened, lam=lam, max_concepts=max_concepts,
                                vocabulary=vocabulary, top=top, projection=projection)
    if index is not None:
        encoder = index.index_encoder(projection)
    else:
        from clapdex.projection import encoder_for_index

        encoder = encoder_for_index(_make_encoder(encoder, encoder_options), None,
                                    _as_projection(projection))
    if index is not None:
        settings = _explaining_settings(index, encoder)
        mean = settings.audio_mean
    else:
        from clapdex.concepts.reference import reference_audio_mean

        mean = reference_audio_mean(encoder)
    if index is not None and vocabulary is None:
        dictionary = index.store.dictionary()
        sparsity = sparsity.otherwise(settings.sparsity)
    else:
        dictionary = build_dictionary(encoder, load_vocabulary(vocabulary or "default"))
    return explain_windows(file, encoder, dictionary, mean, sparsity=sparsity, top=top)


def _explaining_settings(index: Index, encoder) -> IndexSettings:
    """The index's settings, refusing another model's index or one without μ_A yet (`encoder`
    already carries the index's projection, if it has one)."""
    settings = index.settings
    settings.require_model(encoder.fingerprint, index.path)
    if settings.audio_mean is None:
        raise IndexMismatchError(f"index {index.path} has no audio mean yet; index some files first")
    return settings


@dataclass
class Evaluation:
    """The result of evaluate_zeroshot / evaluate_retrieval: what was evaluated (`header`, as
    the CLI prints it) and one row per representation and sparsity setting."""

    header: dict
    rows: list
    columns: list = field(default_factory=list)   # (attribute, header, decimals) for table()

    def table(self) -> str:
        from clapdex.evaluation.report import format_table

        return format_table(self.rows, self.columns)


def _embed_dataset(encoder, paths, cache_dir, use_cache, progress, on_skipped):
    from clapdex.evaluation.datasets import DatasetError
    from clapdex.evaluation.embeddings import embed_files

    bar = Progress(progress, total=len(paths), desc="embedding", unit="file")

    def counted(iterable):
        for item in iterable:  # (position, path)
            bar.set_item(os.fspath(item[1]))
            yield item
            bar.update(1)

    try:
        embedded = embed_files(encoder, paths, cache_dir=cache_dir, use_cache=use_cache,
                               wrap=counted)
    finally:
        bar.close()
    if on_skipped is not None and embedded.skipped:
        on_skipped(list(embedded.skipped))
    if not embedded.kept:
        raise DatasetError("no readable audio files in the dataset")
    return embedded


def _prepare(encoder, embeddings, vocabulary, lam, sweep, max_concepts, plot, projection,
             audio_mean="dataset", dictionary=None):
    """Projection, settings, vocabulary label, dictionary (`dictionary`: e.g. an index's, instead
    of `vocabulary`) and μ_A (see _audio_mean), shared by both evaluations."""
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import load_vocabulary
    from clapdex.evaluation.sweep import check_plot_path, parse_settings
    from clapdex.projection import apply_projection, load_projection

    settings = parse_settings(lam, sweep, max_concepts)
    if plot:
        check_plot_path(plot)
    if projection is not None:
        embeddings = apply_projection(embeddings, load_projection(projection, encoder.fingerprint))
    if dictionary is None:
        vocab = load_vocabulary(vocabulary)
        dictionary = build_dictionary(encoder, vocab)
        label = f"{vocab.name} ({len(vocab.concepts)} concepts)"
    else:
        label = f"the index's ({dictionary.size} concepts)"
    mean = _audio_mean(audio_mean, encoder, embeddings, projection)
    return embeddings, settings, label, dictionary, mean


def _audio_mean(source, encoder, embeddings, projection) -> np.ndarray:
    """μ_A for an evaluation: "dataset" (the mean of its own unit embeddings), "reference" (the
    model's fixed reference mean, one for every dataset, as SpLiCE's precomputed mean), or a
    path to a saved (d,) array (docs/reproducing.md, "The audio mean")."""
    from clapdex.concepts.decompose import audio_mean
    from clapdex.evaluation.datasets import DatasetError
    from clapdex.printable import one_line

    if isinstance(source, np.ndarray):
        mean = source
    elif source == "dataset":
        return audio_mean(embeddings)
    elif source == "reference":
        from clapdex.concepts.reference import reference_audio_mean
        from clapdex.projection import ProjectedEncoder, load_projection

        if projection is not None:  # the reference signals embedded as the evaluated files are
            encoder = ProjectedEncoder(encoder, load_projection(projection, encoder.fingerprint))
        return reference_audio_mean(encoder)
    else:
        try:
            mean = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetError(f"audio mean {source}: not dataset, reference or a readable .npy "
                               f"file ({one_line(str(error))})") from None
    if mean.shape != (embeddings.shape[1],) or not np.all(np.isfinite(mean)):
        raise DatasetError(f"audio mean {source}: expected a finite array of shape "
                           f"({embeddings.shape[1]},), got {mean.shape}")
    return np.asarray(mean, dtype=np.float64)


def _write_outputs(rows, csv, plot, metric, title) -> None:
    from clapdex.evaluation.report import write_csv
    from clapdex.evaluation.sweep import plot_sweep

    if csv:
        write_csv(rows, csv)
    if plot:
        plot_sweep(rows, metric, plot, title)


ZEROSHOT_COLUMNS = [("representation", "repr", 0), ("setting", "setting", 0), ("alpha", "α", 2),
                    ("mean_active", "active", 1), ("median_active", "median", 1),
                    ("mean_concept_fidelity", "c-fid", 3), ("mean_fidelity", "r-fid", 3),
                    ("accuracy", "accuracy", 3), ("macro_f1", "macro-F1", 3)]
# 80 columns: the retrieval table leaves the fidelities to --json / --csv.
RETRIEVAL_COLUMNS = [("representation", "repr", 0), ("setting", "setting", 0), ("alpha", "α", 2),
                     ("mean_active", "active", 1),
                     ("t2a_r1", "T→A R@1", 3), ("t2a_r10", "R@10", 3), ("t2a_map10", "mAP@10", 3),
                     ("a2t_r1", "A→T R@1", 3), ("a2t_r10", "R@10", 3), ("a2t_map10", "mAP@10", 3)]


def _zeroshot_task(data, encoder, prompt, vocabulary, lam, sweep, max_concepts, plot, projection,
                   audio_mean, cache_dir, use_cache, progress, on_skipped, dictionary=None):
    """(header, settings, evaluate(settings, alphas) -> rows) for zero-shot classification."""
    from clapdex.evaluation.datasets import load_labeled
    from clapdex.evaluation.zeroshot import class_prompts, class_text_embeddings, evaluate_zeroshot

    dataset = load_labeled(data)
    class_prompts(dataset.classes, prompt)  # reject a bad template before any encoding
    embedded = _embed_dataset(encoder, dataset.paths, cache_dir, use_cache, progress, on_skipped)
    dataset = dataset.subset(embedded.kept)
    embeddings, settings, label, dictionary, mean = _prepare(
        encoder, embedded.embeddings, vocabulary, lam, sweep, max_concepts, plot, projection,
        audio_mean, dictionary)
    classes = class_text_embeddings(encoder, dataset.classes, prompt)
    header = {"task": "zero-shot classification", "data": str(data), "files": len(dataset.paths),
              "classes": list(dataset.classes), "prompt": prompt, "vocabulary": label,
              "projection": str(projection) if projection else "none",
              "audio mean": _mean_label(audio_mean),
              "skipped": [{"path": p, "reason": r} for p, r in embedded.skipped]}
    return header, settings, lambda chosen, alphas: evaluate_zeroshot(
        embeddings, dataset.targets, classes, dictionary, mean, chosen, alphas)


def _retrieval_task(data, encoder, vocabulary, lam, sweep, max_concepts, plot, projection,
                    audio_mean, cache_dir, use_cache, progress, on_skipped, dictionary=None):
    """(header, settings, evaluate(settings, alphas) -> rows) for text-audio retrieval."""
    from clapdex.evaluation.datasets import load_captions
    from clapdex.evaluation.retrieval import evaluate_retrieval

    dataset = load_captions(data)
    embedded = _embed_dataset(encoder, dataset.paths, cache_dir, use_cache, progress, on_skipped)
    new_index = {old: new for new, old in enumerate(embedded.kept)}
    keep = [j for j, f in enumerate(dataset.caption_file) if f in new_index]
    captions = [dataset.captions[j] for j in keep]
    caption_file = [new_index[dataset.caption_file[j]] for j in keep]
    embeddings, settings, label, dictionary, mean = _prepare(
        encoder, embedded.embeddings, vocabulary, lam, sweep, max_concepts, plot, projection,
        audio_mean, dictionary)
    text = encoder.embed_text(captions)
    header = {"task": "text-audio retrieval", "data": str(data), "files": len(embedded.kept),
              "captions": len(captions), "vocabulary": label,
              "projection": str(projection) if projection else "none",
              "audio mean": _mean_label(audio_mean),
              "skipped": [{"path": p, "reason": r} for p, r in embedded.skipped]}
    return header, settings, lambda chosen, alphas: evaluate_retrieval(
        embeddings, text, caption_file, dictionary, mean, chosen, alphas)


def _mean_label(audio_mean) -> str:
    return "given array" if isinstance(audio_mean, np.ndarray) else str(audio_mean)


def evaluate_zeroshot(data: str | os.PathLike, encoder: EncoderSource = None, *,
                      prompt: str = "this is the sound of {}", vocabulary: str = "default",
                      lam: float | None = None, sweep: str | None = None,
                      max_concepts: str | None = None, projection: str | os.PathLike | None = None,
                      alphas: Sequence[float] = (), audio_mean="dataset",
                      cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                      csv: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                      metric: str = "accuracy", progress: ProgressCallback | None = None,
                      on_skipped: Callable[[list], None] | None = None,
                      **encoder_options) -> Evaluation:
    """Zero-shot classification of `data` (class sub-folders, or a CSV with path,label) with the
    dense embeddings and their concept reconstructions at each sparsity setting (`lam`, a `sweep`
    "λ1,λ2", or `max_concepts` "N1,N2"), and the hybrid α·dense + (1 − α)·concept at each of
    `alphas`. μ_A: `audio_mean` "dataset", "reference", a .npy path or an array. Files are
    embedded once (cached under `cache_dir`); `on_skipped` receives the unreadable files
    [(path, reason)]; `csv` / `plot` also write the rows / the `metric` against sparsity."""
    encoder = _make_encoder(encoder, encoder_options)
    header, settings, evaluate = _zeroshot_task(
        data, encoder, prompt, vocabulary, lam, sweep, max_concepts, plot, projection, audio_mean,
        cache_dir, use_cache, progress, on_skipped)
    rows = evaluate(settings, list(alphas))
    _write_outputs(rows, csv, plot, metric, f"zero-shot {metric} vs sparsity")
    return Evaluation(header, rows, ZEROSHOT_COLUMNS)


def evaluate_retrieval(data: str | os.PathLike, encoder: EncoderSource = None, *,
                       vocabulary: str = "default", lam: float | None = None,
                       sweep: str | None = None, max_concepts: str | None = None,
                       projection: str | os.PathLike | None = None,
                       alphas: Sequence[float] = (), audio_mean="dataset",
                       cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                       csv: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                       metric: str = "t2a_r10", progress: ProgressCallback | None = None,
                       on_skipped: Callable[[list], None] | None = None,
                       **encoder_options) -> Evaluation:
    """Text-audio retrieval on `data`, a CSV with path,caption: R@1, R@10, mAP@10 both ways for
    the dense audio embeddings, their concept reconstructions (captions stay dense) and the
    hybrid score at each of `alphas`, as search scores it. Options as for evaluate_zeroshot."""
    encoder = _make_encoder(encoder, encoder_options)
    header, settings, evaluate = _retrieval_task(
        data, encoder, vocabulary, lam, sweep, max_concepts, plot, projection, audio_mean,
        cache_dir, use_cache, progress, on_skipped)
    rows = evaluate(settings, list(alphas))
    _write_outputs(rows, csv, plot, metric, f"retrieval {metric} vs sparsity")
    return Evaluation(header, rows, RETRIEVAL_COLUMNS)


TUNE_SWEEP = "0.02,0.03,0.05,0.07,0.1,0.15,0.2,0.3"  # λ grid when no sweep is given
RETRIEVAL_METRICS = ("t2a_r1", "t2a_r10", "t2a_map10", "a2t_r1", "a2t_r10", "a2t_map10")


@dataclass
class TuneOutcome:
    """What `tune` evaluated and chose: `rows` are the dense row, the concept rows (the curve, by
    active concepts) and the hybrid rows at the chosen setting; `choice` is the TuneResult;
    `applied` says what was changed in the index (None without `apply`)."""

    header: dict
    rows: list
    columns: list
    choice: Any
    applied: dict | None = None

    def table(self) -> str:
        from clapdex.evaluation.report import format_table

        return format_table(self.rows, self.columns)


def tune(data: str | os.PathLike, encoder: EncoderSource = None, *, task: str = "auto",
         prompt: str = "this is the sound of {}", vocabulary: str = "default",
         lam: float | None = None, sweep: str | None = None, max_concepts: str | None = None,
         alphas: Sequence[float] | None = None, metric: str | None = None,
         apply: str | os.PathLike | None = None, projection: str | os.PathLike | None = None,
         audio_mean="dataset", cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
         csv: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
         progress: ProgressCallback | None = None,
         on_skipped: Callable[[list], None] | None = None, **encoder_options) -> TuneOutcome:
    """Choose the sparsity and the hybrid α on labelled `data` (evaluation.tuning): the knee of
    `metric` (default accuracy, or t2a_r10 for retrieval) against active concepts over the sweep
    (default TUNE_SWEEP), then the best of `alphas` (default 0, 0.1, ..., 1) there. `task`:
    "zeroshot", "retrieval" or "auto" (retrieval for a CSV with a caption column). `apply`: an
    index path: tune with its concepts, then reindex it with the choice and store α as its
    search default."""
    from clapdex.evaluation.datasets import DatasetError
    from clapdex.evaluation.sweep import ALPHA_SWEEP
    from clapdex.evaluation.tuning import apply_to_index, choose

    if task == "auto":
        task = "retrieval" if _has_caption_column(data) else "zeroshot"
    if task not in ("zeroshot", "retrieval"):
        raise DatasetError(f"unknown task {task!r}; choose zeroshot or retrieval")
    metric = metric or ("accuracy" if task == "zeroshot" else "t2a_r10")
    if (metric in RETRIEVAL_METRICS) != (task == "retrieval"):
        raise DatasetError(f"metric {metric} does not apply to {task}")
    if lam is None and sweep is None and max_concepts is None:
        sweep = TUNE_SWEEP
    alphas = list(ALPHA_SWEEP if alphas is None else alphas)
    encoder = _make_encoder(encoder, encoder_options)
    dictionary = _index_dictionary(apply, encoder, projection) if apply is not None else None
    common = (vocabulary, lam, sweep, max_concepts, plot, projection, audio_mean, cache_dir,
              use_cache, progress, on_skipped, dictionary)
    if task == "zeroshot":
        header, settings, evaluate = _zeroshot_task(data, encoder, prompt, *common)
        columns = ZEROSHOT_COLUMNS
    else:
        header, settings, evaluate = _retrieval_task(data, encoder, *common)
        columns = RETRIEVAL_COLUMNS
    result = choose(evaluate(settings, []), metric, lambda s, a: evaluate([s], a), alphas,
                    DEFAULT_ALPHA, header["task"])
    rows = [result.dense, *result.curve, *result.alphas]
    _write_outputs(rows, csv, plot, metric, f"{metric} vs sparsity (knee: {result.setting.label})")
    applied = None
    if apply is not None:
        with Index(apply, encoder) as index:
            summary = apply_to_index(index, result, progress)
        applied = {"index": str(apply), "segments": summary.segments, "lambda": summary.lam,
                   "max_concepts": summary.max_concepts, "alpha": result.alpha}
    return TuneOutcome(header, rows, columns, result, applied)


def _has_caption_column(data) -> bool:
    import csv as csv_module

    path = Path(data)
    if path.is_dir():
        return False
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv_module.reader(handle), [])
    return "caption" in [h.strip().lower() for h in header]


def _index_dictionary(index_path, encoder, projection):
    """The index's stored concepts, after checking that `data` is embedded as the index's was."""
    from clapdex.projection import ProjectedEncoder, load_projection

    IndexStore.require_writable(index_path)
    with IndexStore.open(index_path, write=True) as store:
        settings = store.settings
        dictionary = store.dictionary()
    if projection is not None:
        encoder = ProjectedEncoder(encoder, load_projection(projection, encoder.fingerprint))
    settings.require_model(encoder.fingerprint, index_path)
    return dictionary


@dataclass
class FinetuneSummary:
    """What `finetune` trained and wrote (accuracies are zero-shot, before and after)."""

    output: str
    files: int
    classes: int
    train: int
    validation: int
    epochs: int
    best_epoch: int
    before_train_accuracy: float
    before_validation_accuracy: float
    after_train_accuracy: float
    after_validation_accuracy: float      # chosen by early stopping on this split: optimistic
    test: int = 0                         # a third split, used for nothing else
    before_test_accuracy: float | None = None
    after_test_accuracy: float | None = None  # the honest figure


def finetune(data: str | os.PathLike, output: str | os.PathLike, encoder: EncoderSource = None, *,
             prompt: str = "this is the sound of {}", temperature: float = 0.05,
             validation_fraction: float = 0.2, test_fraction: float = 0.2,
             epochs: int = 200, patience: int = 10,
             learning_rate: float = 1e-3, seed: int = 0,
             cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
             progress: ProgressCallback | None = None,
             on_skipped: Callable[[list], None] | None = None,
             **encoder_options) -> FinetuneSummary:
    """Train a linear projection of audio embeddings towards their class prompts (`data` as for
    evaluate_zeroshot) and write it to `output` (use it with `projection=` elsewhere). Three
    disjoint stratified splits: train, validation (early stopping) and test (`test_fraction`, 0
    for none), on which the reported after-accuracy is measured."""
    from clapdex.evaluation.datasets import load_labeled
    from clapdex.evaluation.projection import train_projection
    from clapdex.evaluation.zeroshot import class_prompts, class_text_embeddings
    from clapdex.projection import save_projection

    encoder = _make_encoder(encoder, encoder_options)
    dataset = load_labeled(data)
    class_prompts(dataset.classes, prompt)
    embedded = _embed_dataset(encoder, dataset.paths, cache_dir, use_cache, progress, on_skipped)
    dataset = dataset.subset(embedded.kept)
    with Progress(progress, total=epochs, desc="training", unit="epoch") as bar:
        result = train_projection(embedded.embeddings, dataset.targets,
                                  class_text_embeddings(encoder, dataset.classes, prompt),
                                  encoder.fingerprint, classes=dataset.classes, prompt=prompt,
                                  temperature=temperature, validation_fraction=validation_fraction,
                                  learning_rate=learning_rate, max_epochs=epochs,
                                  patience=patience, seed=seed, on_epoch=lambda *_: bar.update(1),
                                  test_fraction=test_fraction)
    save_projection(result.projection, output)
    return FinetuneSummary(
        output=str(output), files=len(dataset.paths), classes=len(dataset.classes),
        train=result.train_size, validation=result.validation_size, epochs=result.epochs,
        best_epoch=result.best_epoch, before_train_accuracy=result.before_train,
        before_validation_accuracy=result.before_validation,
        after_train_accuracy=result.after_train, after_validation_accuracy=result.after_validation,
        test=result.test_size,
        before_test_accuracy=result.before_test if result.test_size else None,
        after_test_accuracy=result.after_test if result.test_size else None)


def check_model(encoder: EncoderSource = None, compare: Sequence[str | os.PathLike] = (),
                **encoder_options) -> dict:
    """Load the model, embed one test window (a 440 Hz tone) and one text (TEST_TEXT); the
    encoder's description plus timings and shapes. ModelError when it cannot load or gives
    NaN/inf. `compare`: audio files on which the backend's embeddings are compared with PyTorch
    fp32 on the CPU (encoder.compare_with_pytorch; CLAP encoders only), under "compare"."""
    import time

    from clapdex.errors import ModelError

    encoder = _make_encoder(encoder, encoder_options)  # ModelError (one line, with the fix)
    started = time.perf_counter()
    if hasattr(encoder, "load"):
        encoder.load()
    load_seconds = time.perf_counter() - started

    t = np.arange(int(round(encoder.sample_rate * encoder.window_seconds))) / encoder.sample_rate
    window = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)  # deterministic input
    started = time.perf_counter()
    audio = encoder.embed_audio(window[None, :])
    audio_seconds = time.perf_counter() - started
    started = time.perf_counter()
    text = encoder.embed_text([TEST_TEXT])
    text_seconds = time.perf_counter() - started
    if not (np.isfinite(audio).all() and np.isfinite(text).all()):
        raise ModelError("the model produced NaN or infinite embeddings; the weights file may be damaged")

    info = dict(encoder.describe()) if hasattr(encoder, "describe") else {}
    info.update(fingerprint=encoder.fingerprint, load_seconds=round(load_seconds, 3),
                audio_embedding_shape=list(audio.shape), audio_seconds=round(audio_seconds, 3),
                text_embedding_shape=list(text.shape), text_seconds=round(text_seconds, 3),
                audio_norm=float(np.linalg.norm(audio[0])), ok=True)
    if compare:
        from clapdex.encoder import ClapEncoder, compare_with_pytorch

        if not isinstance(encoder, ClapEncoder):
            raise ModelError("comparing backends needs a CLAP encoder; this one is not CLAP")
        info["compare"] = compare_with_pytorch(encoder, compare)
    return info
