"""The index database schema (SQLAlchemy 2.x). The database is the source of truth.

Vectors are stored as little-endian float32 bytes (LargeBinary) so the schema is portable between
SQLite and PostgreSQL. `postings` is the inverted concept index: one row per non-zero concept weight
of a segment, clustered by (concept_id, segment_id) for "segments of concept k" and indexed on
(segment_id, concept_id, weight) for "all concepts of this segment".
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, PrimaryKeyConstraint, String, Text, text)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from clapdex.errors import IndexDamagedError

SCHEMA_VERSION = 6  # 2: concept_stats / corpus_stats tables, segments.fidelity index, covering
                    #    (concept_id, weight, segment_id) postings index (audit)
                    # 3: index_settings.projection / projection_hash (optional linear projection)
                    # 4: index_settings.generation (bumped by every write transaction),
                    #    settings_version and build_id; segments.settings_version (write lock)
                    # 4: segments.concept_fidelity (indexed; filled from stored data on upgrade),
                    #    index_settings.alpha (the hybrid α `clapdex tune --apply` chose)
                    # 5: index_settings.roots (named roots: files under one are stored relative
                    #    to it, storage/roots.py)
                    # 5: ix_postings_concept_weight (concept_id, weight, segment_id) replaced by
                    #    ix_postings_concept_segment_weight (concept_id, segment_id, weight);
                    #    concept_stats.max_weight (what that index no longer gives cheaply)
                    # 5: files.warning (truncated / damaged audio); segments.level_db,
                    #    clipped_fraction, silent, clipped (NULL: not measured, e.g. indexed
                    #    before version 5 or imported embeddings)
                    # 6: postings clustered by (concept_id, segment_id): SQLite WITHOUT ROWID,
                    #    PostgreSQL's primary key INCLUDE (weight); the (concept, segment, weight)
                    #    index and the rowid table are gone, ix_postings_segment became the
                    #    covering ix_postings_segment_concept_weight (migrate.reshape_postings)
                    # 6: ix_segments_fidelity dropped (nothing reads by it)
# Version 4 and later upgrade older indexes in place (storage/migrate.py): a new column must be
# nullable or have a server_default, and a computed one needs a filler there.


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


# A file name that is not valid UTF-8 reaches Python as a str with lone surrogates U+DC80..U+DCFF
# (surrogateescape); neither SQLite's nor PostgreSQL's text columns can hold those. OsText stores
# such text losslessly: each surrogate byte as MARK + two hex digits, and a MARK that is really in
# the name as MARK + MARK. MARK is U+FDD0, a Unicode noncharacter ("for internal use"), so valid
# names stay stored exactly as they are. Reading decodes it back; equality, IN and prefix/suffix
# LIKE comparisons work on the stored form because the escaping is done character by character.
_MARK = "\ufdd0"
_ESCAPE = re.compile("[\udc80-\udcff\ufdd0]")
_UNESCAPE = re.compile("\ufdd0(\ufdd0|[0-9a-f]{2})")


def os_text_to_db(text: str) -> str:
    """The stored form of an OS string (a path, an error text that may quote one)."""
    return _ESCAPE.sub(lambda m: _MARK * 2 if m[0] == _MARK else f"{_MARK}{ord(m[0]) - 0xDC00:02x}",
                       text)


def os_text_from_db(text: str) -> str:
    if _MARK not in text:
        return text
    return _UNESCAPE.sub(lambda m: _MARK if m[1] == _MARK else chr(0xDC00 + int(m[1], 16)), text)


class OsText(TypeDecorator):
    """Text that may hold surrogate-escaped bytes (see os_text_to_db)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value if value is None else os_text_to_db(value)

    def process_result_value(self, value, dialect):
        return value if value is None else os_text_from_db(value)


# A file under a named root (storage/roots.py) is stored as ROOT_MARK + name + "/" + its path
# relative to the root ("/"-separated, escaped as OsText does). An escaped string never holds
# ROOT_MARK (MARK is always followed by MARK or two hex digits there), so the form is unambiguous
# and every other path is stored exactly as before.
ROOT_MARK = _MARK + "@"


def root_form(name: str, relative: str) -> str:
    """The stored form of `relative` ('/'-separated) under the root `name`."""
    return f"{ROOT_MARK}{name}/{os_text_to_db(relative)}"


def parse_root_form(stored: str) -> tuple[str, str] | None:
    """(root name, relative path) of a stored path under a root, else None."""
    if not stored.startswith(ROOT_MARK):
        return None
    name, _, relative = stored[len(ROOT_MARK):].partition("/")
    return name, os_text_from_db(relative)


class FilePath(TypeDecorator):
    """files.path: an OS path in Python, its stored form in the database. The index's roots
    translate between the two (storage/roots.py): IndexStore puts them on its engine's dialect
    as `clapdex_paths`, so every query on files.path, in any module, speaks OS paths. Without
    them paths are stored as OsText."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        paths = getattr(dialect, "clapdex_paths", None)
        return os_text_to_db(value) if paths is None else paths().to_db(value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        paths = getattr(dialect, "clapdex_paths", None)
        if paths is None:
            if value.startswith(ROOT_MARK):
                raise IndexDamagedError(f"file {value[len(ROOT_MARK):]!r} is stored under a "
                                        "root, and no roots are known here")
            return os_text_from_db(value)
        return paths().from_db(value)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class IndexSettingsRow(Base):
    """Exactly one row: how this index was built. Opening with other settings is refused."""

    __tablename__ = "index_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    encoder_fingerprint: Mapped[str] = mapped_column(String(512))
    dimension: Mapped[int] = mapped_column(Integer)
    sample_rate: Mapped[int] = mapped_column(Integer)
    window_seconds: Mapped[float] = mapped_column(Float)
    hop_seconds: Mapped[float] = mapped_column(Float)
    vocabulary_name: Mapped[str] = mapped_column(String(512))
    vocabulary_hash: Mapped[str] = mapped_column(String(128))
    lam: Mapped[float | None] = mapped_column(Float, nullable=True)           # fixed-lambda mode
    max_concepts: Mapped[int | None] = mapped_column(Integer, nullable=True)  # "at most N" mode
    audio_mean: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # mu_A, float32
    faiss_factory: Mapped[str] = mapped_column(String(256), default="Flat")
    # The linear projection (`clapdex finetune`) applied to every stored embedding: d x d float32,
    # row-major, and its Projection.content_hash. NULL: embeddings are the model's own.
    projection: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    projection_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The hybrid search's dense weight α chosen by `clapdex tune --apply`; NULL: DEFAULT_ALPHA.
    alpha: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Moves on with every write transaction (IndexStore.write): files derived from the database
    # (the FAISS file, search's memory-mapped state) say which generation they reflect.
    generation: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    # Moves on whenever what a decomposition depends on changes (λ / max-concepts, μ_A,
    # vocabulary, projection); every segment records the version it was decomposed under.
    settings_version: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    # A new random id whenever the index is created or rebuilt (segment ids of one build are never
    # reused, so a derived file of the same build can be brought up to date by ids).
    build_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Named roots, JSON {name: location} (storage/roots.py); NULL: none.
    roots: Mapped[str | None] = mapped_column(Text, nullable=True)


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = {"sqlite_autoincrement": True}  # never reuse ids of deleted rows

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # absolute, as given by the OS, or relative to a named root (FilePath)
    path: Mapped[str] = mapped_column(FilePath, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)      # seconds
    sample_rate: Mapped[int | None] = mapped_column(Integer, nullable=True)   # of the source file
    channels: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # "indexed" | "error"
    error: Mapped[str | None] = mapped_column(OsText, nullable=True)
    # One line when the audio is damaged or cut short ("header says 12.0 s, decoded 6.0 s"): the file
    # is indexed with what decodes and flagged truncated. NULL: nothing wrong (or indexed before v5).
    warning: Mapped[str | None] = mapped_column(OsText, nullable=True)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SegmentRow(Base):
    __tablename__ = "segments"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are FAISS ids: never reuse them

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # also the FAISS id
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)   # seconds in the file
    end: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # dense CLAP embedding, float32, raw
    # cos(recomposed, normalize(embedding)). Not indexed since schema 6: no query filters or sorts
    # by it (the audit's listing uses concept_fidelity), and every insert into an index ordered
    # by a random value dirties its own page.
    fidelity: Mapped[float] = mapped_column(Float)
    # cos(Cw, z) on the centred window, 0 without concepts: how much of what is distinctive about
    # the window the concepts explain (the low-fidelity flag and audit use this). Indexed for the
    # audit's listing. NULL only inside an upgrade, before storage/migrate.py fills it.
    concept_fidelity: Mapped[float | None] = mapped_column(Float, index=True, nullable=True)
    n_concepts: Mapped[int] = mapped_column(Integer)
    # Exact explanations (design.md): u = C w, recon_norm = ||u||, shift_norm = ||u/||u|| + mu_A||.
    recon_norm: Mapped[float] = mapped_column(Float)
    shift_norm: Mapped[float] = mapped_column(Float)
    # index_settings.settings_version this segment's postings were decomposed under.
    settings_version: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    # What the window's source audio measured (audio.DecodeReport.levels): RMS level in dBFS and
    # the fraction of clipped samples, and the flags they gave under clapdex.defaults' thresholds
    # when it was indexed. A silent segment has no concepts. NULL: not measured (see version 5).
    level_db: Mapped[float | None] = mapped_column(Float, nullable=True)
    clipped_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    silent: Mapped[bool | None] = mapped_column(Boolean, index=True, nullable=True)
    clipped: Mapped[bool | None] = mapped_column(Boolean, index=True, nullable=True)


class ConceptRow(Base):
    __tablename__ = "concepts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # = column in the concept matrix (0..K-1)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # raw text embedding, float32


class PostingRow(Base):
    """Inverted concept index: segment `segment_id` has weight `weight` > 0 on concept `concept_id`.

    Two B-trees hold every posting, one per way it is read: the table itself, clustered by
    (concept_id, segment_id) with the weight in the row ("segments of concept k (with weight >=
    w)", audit), and a covering (segment_id, concept_id, weight) index ("all concepts of these
    segments": search files, copies, removals). Both are ordered by segment id within their key,
    and new segments have the largest ids, so a write appends at the end of each concept's range
    and at the end of the segment index. Until schema 5 four B-trees held every posting (a rowid
    table, its primary key's index, a covering concept index and a segment index), two of them
    in concept order: twice the pages a write touches away from the end (docs/indexing.md,
    "Storing at scale")."""

    __tablename__ = "postings"

    concept_id: Mapped[int] = mapped_column(ForeignKey("concepts.id"))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    weight: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        # PostgreSQL keeps rows in a heap: the weight in the primary key's index makes it covering.
        PrimaryKeyConstraint("concept_id", "segment_id", postgresql_include=["weight"]),
        Index("ix_postings_segment_concept_weight", "segment_id", "concept_id", "weight"),
        {"sqlite_with_rowid": False},  # SQLite: the table is the (concept, segment) B-tree
    )


# ---- Audit totals (maintained by storage/concept_stats.py inside IndexStore's write transactions) --

class ConceptStatsRow(Base):
    """Per-concept prevalence totals, so `clapdex concepts` reads K rows instead of every posting."""

    __tablename__ = "concept_stats"

    concept_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n_files: Mapped[int] = mapped_column(Integer)         # files with at least one active segment
    n_segments: Mapped[int] = mapped_column(Integer)      # segments with a posting for the concept
    active_seconds: Mapped[float] = mapped_column(Float)  # per-file union of active segments, summed
    weight_sum: Mapped[float] = mapped_column(Float)      # sum of the concept's posting weights
    # The concept's largest posting weight. NULL while unknown (a removal took the largest one):
    # readers then look it up in the postings.
    max_weight: Mapped[float | None] = mapped_column(Float, nullable=True)


class CorpusStatsRow(Base):
    """One row: corpus totals, and whether concept_stats is up to date (else it is rebuilt on read)."""

    __tablename__ = "corpus_stats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    valid: Mapped[bool] = mapped_column(Boolean)
    n_files: Mapped[int] = mapped_column(Integer)
    n_segments: Mapped[int] = mapped_column(Integer)
    indexed_seconds: Mapped[float] = mapped_column(Float)  # per-file union of all segments, summed
