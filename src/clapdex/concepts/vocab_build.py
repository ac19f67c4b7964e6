"""Building concept vocabularies from tag metadata (e.g. FSD50K's Freesound tags).

Three methods, all deterministic:

- ``baseline``: the N most frequent normalised tags.
- ``pruned``: the most frequent tags after dropping non-semantic tags (see ``JUNK_WORDS``,
  ``JUNK_PHRASES`` and ``JUNK_PATTERNS`` below) and near-duplicates: a tag whose text embedding has
  cosine >= threshold with an already kept, more frequent tag is dropped; the next candidates refill
  the list up to N.
- ``clustered``: spherical k-means of the text embeddings of the (junk-free) candidate tags into N
  groups, each named by its most frequent member.

Frequency is document frequency: the number of clips carrying a tag (a tag repeated within one clip
counts once). Ties are broken alphabetically.

Accepted tag files (``read_tag_file``):

- JSON, a dict clip_id -> record, where a record is an object with a ``tags`` list (FSD50K's
  ``*_clips_info_FSD50K.json``: {"64760": {"title": ..., "tags": [...], ...}}), or a list of tags.
- JSON, a list of records: objects with a ``tags`` list, or plain lists of tags.
  A record without ``tags`` may use ``labels`` instead (FSD50K ground-truth style).
- CSV (``.csv``, comma-delimited) or TSV (``.tsv``) with a header row and a ``tags`` column, else a
  ``labels`` column (FSD50K's ``dev.csv``/``eval.csv``). Inside one cell, tags are separated by
  commas, semicolons or '|' when the cell has any of those; otherwise by whitespace (Freesound style,
  where a multi-word tag is written with hyphens: ``dog-bark rain``).
A tag given as a string where a list is expected is split by the same cell rule.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from clapdex.defaults import (VOCAB_DEFAULT_CANDIDATES_PER_CONCEPT, VOCAB_DEFAULT_DUPLICATE_THRESHOLD,
                              VOCAB_DEFAULT_SIZE, VOCAB_METHODS)
from clapdex.errors import VocabularyError
from clapdex.vectors import unit_rows

METHODS = VOCAB_METHODS
DEFAULT_SIZE = VOCAB_DEFAULT_SIZE
DEFAULT_DUPLICATE_THRESHOLD = VOCAB_DEFAULT_DUPLICATE_THRESHOLD  # see clapdex/defaults.py
DEFAULT_CANDIDATES_PER_CONCEPT = VOCAB_DEFAULT_CANDIDATES_PER_CONCEPT
DEFAULT_BATCH_SIZE = 256
DEFAULT_KMEANS_ITERATIONS = 30

TagLists = list[list[str]]
Progress = Callable[[int], None]

# --- Rules for non-semantic tags (used by `pruned` and `clustered`) -------------------------------
# A tag is junk when it is one of JUNK_PHRASES, matches one of JUNK_PATTERNS as a whole, or every
# word of it is a junk word, a stop word or a number-like token ("stereo 44100 wav", "zoom h4n").
# A tag with one meaningful word survives ("rain stereo" stays), so these lists only remove tags that
# say nothing about what is heard.

JUNK_WORDS = frozenset("""
    wav wavfile mp3 flac ogg aiff aif aac m4a wma mp4 file files
    stereo mono multitrack binaural ambisonic ambisonics ms xy ortf surround quad
    recording recordings recorded record rec fieldrecording foley
    sound sounds audio sfx fx effect effects soundeffect soundeffects sounddesign sample samples
    freesound free cc0 cc license public domain
    edit edited processed unprocessed raw original remastered mastered normalized normalised
    misc other various untitled test tests new own
    bit bits khz kbps bpm
    zoom h1 h1n h2 h2n h4 h4n h5 h6 tascam dr05 dr07 dr40 dr100 olympus ls10 ls11 ls100 sony pcm
    m10 d50 marantz pmd660 pmd661 pmd671 roland edirol r09 r09hr r05 r26 r44 nagra rode nt4 nt5 ntg2
    ntg3 videomic sennheiser mkh416 mkh8040 me66 neumann km184 technica shure sm57 sm58 akg
    behringer hydrophone condenser
    ableton audacity reaper protools cubase logic garageband
""".split())

JUNK_PHRASES = frozenset({
    "field recording", "sound effect", "sound effects", "sound design", "audio technica",
    "sound devices", "contact mic", "contact microphone", "creative commons", "public domain",
    "pro tools", "fl studio", "zoom h4n", "zoom h2n", "wave file",
})

STOP_WORDS = frozenset("""
    a an the and or but of in on at to with without for by from into onto as is it its this that
    these those i me my mine we our you your he she his her they them their be was were are been
    no not s so very just some any all out up down over off too then than there here
""".split())

JUNK_PATTERNS = (
    re.compile(r"\d+(\.\d+)?"),                                      # numbers, years: 2012, 01, 3.5
    re.compile(r"[\d .]+"),                                          # dates, versions: 2012 05 17
    re.compile(r"\d+(\.\d+)? ?k(hz)?"),                              # sample rates: 48khz, 44.1 khz, 96k
    re.compile(r"(8000|11025|16000|22050|32000|44100|48000|88200|96000|176400|192000) ?(hz)?"),
    re.compile(r"\d+ ?(bit|bits|bpm|kbps|fps)"),                     # 24bit, 120 bpm, 320kbps
    re.compile(r".?"),                                               # empty or one character
)


def _word_is_junk(word: str) -> bool:
    if word in JUNK_WORDS or word in STOP_WORDS:
        return True
    return any(pattern.fullmatch(word) for pattern in JUNK_PATTERNS)


def is_junk_tag(tag: str) -> bool:
    """True when a normalised tag names no sound (file format, gear, number, stop words, ...)."""
    if tag in JUNK_PHRASES or any(pattern.fullmatch(tag) for pattern in JUNK_PATTERNS):
        return True
    return all(_word_is_junk(word) for word in tag.split())


# --- Reading and normalising tags ---------------------------------------------------------------

_APOSTROPHES = re.compile(r"['’`]")
_NON_WORD = re.compile(r"[^\w.]|_")
_STRAY_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # keeps decimal points (44.1khz), drops the rest
_CELL_SEPARATORS = re.compile(r"[,;|]")


def normalize_tag(tag: str) -> str:
    """Lower case; '-' and '_' become spaces; apostrophes vanish; other punctuation becomes space."""
    text = unicodedata.normalize("NFKC", str(tag)).lower()
    text = _APOSTROPHES.sub("", text)
    text = _NON_WORD.sub(" ", text)
    text = _STRAY_DOT.sub(" ", text)
    return " ".join(text.split())


def split_tag_cell(cell: str) -> list[str]:
    """Tags in one text cell: split on , ; | when present, else on whitespace."""
    if _CELL_SEPARATORS.search(cell):
        parts = _CELL_SEPARATORS.split(cell)
    else:
        parts = cell.split()
    return [part.strip() for part in parts if part.strip()]


def read_tag_file(path: str | Path) -> TagLists:
    """Tags per clip from a JSON or CSV/TSV tag file (shapes in the module docstring); tags as written."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VocabularyError(f"{path}: no such tag file") from None
    except OSError as error:
        raise VocabularyError(f"{path}: cannot read ({error.strerror or error})") from None
    if b"\x00" in data:
        raise VocabularyError(f"{path}: looks like a binary file; expected a JSON or CSV tag file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise VocabularyError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None

    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix not in (".csv", ".tsv") and text.lstrip()[:1] in ("{", "[")):
        tag_lists = _tags_from_json(path, text)
    else:
        tag_lists = _tags_from_csv(path, text, delimiter="\t" if suffix == ".tsv" else ",")
    if not any(tag_lists):
        raise VocabularyError(f"{path}: no tags found in {len(tag_lists)} records")
    return tag_lists


def _tags_from_json(path: Path, text: str) -> TagLists:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise VocabularyError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:  # json's parser recurses once per level of nesting
        raise VocabularyError(f"{path}: JSON nested too deeply for a tag file") from None
    if isinstance(document, dict):
        records: Iterable[Any] = document.values()
    elif isinstance(document, list):
        records = document
    else:
        raise VocabularyError(f"{path}: expected a JSON object (clip -> tags) or a list of records")
    return [_tags_of_record(path, record) for record in records]


def _tags_of_record(path: Path, record: Any) -> list[str]:
    if isinstance(record, dict):
        for key in ("tags", "labels"):
            if key in record:
                return _tag_values(path, record[key])
        raise VocabularyError(f"{path}: a record has no 'tags' (or 'labels') field; "
                              f"fields seen: {', '.join(sorted(map(str, record))) or 'none'}")
    return _tag_values(path, record)


def _tag_values(path: Path, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_tag_cell(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise VocabularyError(f"{path}: tags must be a list of strings or one string, not {type(value).__name__}")


def _tags_from_csv(path: Path, text: str, delimiter: str) -> TagLists:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = {name.strip().lower(): name for name in (reader.fieldnames or []) if name}
    column = columns.get("tags") or columns.get("labels")
    if column is None:
        seen = ", ".join(columns) or "none"
        raise VocabularyError(f"{path}: no 'tags' or 'labels' column (columns: {seen}); "
                              "expected a header row, or use a .json tag file")
    return [split_tag_cell(row.get(column) or "") for row in reader]


def count_tags(tag_lists: Iterable[Iterable[str]]) -> Counter:
    """Normalised tag -> number of clips carrying it (empty tags dropped)."""
    counts: Counter = Counter()
    for tags in tag_lists:
        counts.update({normalized for normalized in map(normalize_tag, tags) if normalized})
    return counts


def ranked_tags(counts: Counter) -> list[str]:
    """Tags by decreasing frequency, ties alphabetically."""
    return sorted(counts, key=lambda tag: (-counts[tag], tag))


# --- Building -----------------------------------------------------------------------------------

@dataclass
class VocabularyBuild:
    """What a build produced, and what it dropped (for reports)."""

    method: str
    concepts: list[str]
    counts: dict[str, int]                                    # clips per concept (its name's tag)
    junk: list[str] = field(default_factory=list)             # junk tags among the candidates seen
    duplicates: dict[str, str] = field(default_factory=dict)  # dropped tag -> kept tag it repeats
    groups: list[list[str]] = field(default_factory=list)     # clustered: members per concept, name first


def build_vocabulary(tag_lists: Iterable[Iterable[str]], size: int = DEFAULT_SIZE, method: str = "baseline",
                     encoder: Any = None, threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                     candidates: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     progress: Progress | None = None) -> VocabularyBuild:
    """Builds a vocabulary of at most `size` concepts with one of METHODS (fewer if the tags run out).

    `encoder` (a clapdex.encoder.Encoder) is needed by `pruned` and `clustered` for text embeddings;
    `candidates` caps how many tags `clustered` clusters (default DEFAULT_CANDIDATES_PER_CONCEPT x size);
    `progress` is called with the number of tags embedded after each batch.
    """
    if method not in METHODS:
        raise VocabularyError(f"unknown build method {method!r}; choose one of {', '.join(METHODS)}")
    if size < 1:
        raise VocabularyError(f"vocabulary size must be at least 1, got {size}")
    if batch_size < 1:
        raise VocabularyError(f"batch size must be at least 1, got {batch_size}")
    counts = count_tags(tag_lists)
    if not counts:
        raise VocabularyError("no tags to build a vocabulary from")
    if method == "baseline":
        concepts = ranked_tags(counts)[:size]
        return VocabularyBuild("baseline", concepts, {tag: counts[tag] for tag in concepts})
    if encoder is None:
        raise VocabularyError(f"the {method} method needs a text encoder")
    if method == "pruned":
        return _build_pruned(counts, size, encoder, threshold, batch_size, progress)
    return _build_clustered(counts, size, encoder, candidates, batch_size, progress)


def _junk_free(counts: Counter) -> tuple[list[str], list[str]]:
    candidates, junk = [], []
    for tag in ranked_tags(counts):
        (junk if is_junk_tag(tag) else candidates).append(tag)
    return candidates, junk


def _embed_unit(encoder: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit-length float32 text embeddings (a zero embedding stays zero)."""
    embeddings = np.asarray(encoder.embed_text(list(texts)), dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise VocabularyError(f"the encoder returned text embeddings of shape {embeddings.shape} "
                              f"for {len(texts)} texts")
    return unit_rows(embeddings, np.float32)


def _build_pruned(counts: Counter, size: int, encoder: Any, threshold: float, batch_size: int,
                  progress: Progress | None) -> VocabularyBuild:
    if not 0.0 < threshold <= 1.0:
        raise VocabularyError(f"duplicate threshold must be in (0, 1], got {threshold}")
    candidates, junk = _junk_free(counts)
    kept: list[str] = []
    kept_vectors: np.ndarray | None = None
    duplicates: dict[str, str] = {}
    # Greedy in frequency order, embedding lazily: the more frequent of two near-duplicates is seen
    # first and kept; later candidates refill the list until it holds `size` concepts.
    for start in range(0, len(candidates), batch_size):
        batch = candidates[start:start + batch_size]
        vectors = _embed_unit(encoder, batch)
        if kept_vectors is None:
            kept_vectors = np.empty((size, vectors.shape[1]), dtype=np.float32)
        for tag, vector in zip(batch, vectors):
            if kept:
                similarities = kept_vectors[:len(kept)] @ vector
                best = int(np.argmax(similarities))
                if similarities[best] >= threshold:
                    duplicates[tag] = kept[best]
                    continue
            kept_vectors[len(kept)] = vector
            kept.append(tag)
            if len(kept) == size:
                break
        if progress is not None:
            progress(len(batch))
        if len(kept) == size:
            break
    if not kept:
        raise VocabularyError("every tag was dropped as non-semantic; nothing left to build from")
    return VocabularyBuild("pruned", kept, {tag: counts[tag] for tag in kept}, junk=junk, duplicates=duplicates)


def _build_clustered(counts: Counter, size: int, encoder: Any, candidates: int | None, batch_size: int,
                     progress: Progress | None) -> VocabularyBuild:
    pool_size = candidates if candidates is not None else DEFAULT_CANDIDATES_PER_CONCEPT * size
    if pool_size < 1:
        raise VocabularyError(f"candidate count must be at least 1, got {pool_size}")
    ranked, junk = _junk_free(counts)
    pool = ranked[:pool_size]
    if not pool:
        raise VocabularyError("every tag was dropped as non-semantic; nothing left to cluster")
    chunks = []
    for start in range(0, len(pool), batch_size):
        chunks.append(_embed_unit(encoder, pool[start:start + batch_size]))
        if progress is not None:
            progress(len(chunks[-1]))
    vectors = np.concatenate(chunks)
    k = min(size, len(pool))
    labels = spherical_kmeans(vectors, k)
    # The pool is in frequency order, so each group's first member is its most frequent tag.
    groups: dict[int, list[str]] = {}
    for tag, label in zip(pool, labels):
        groups.setdefault(int(label), []).append(tag)
    rank = {tag: position for position, tag in enumerate(pool)}
    ordered = sorted(groups.values(), key=lambda members: rank[members[0]])
    names = [members[0] for members in ordered]
    return VocabularyBuild("clustered", names, {name: counts[name] for name in names}, junk=junk,
                           groups=ordered)


def spherical_kmeans(vectors: np.ndarray, k: int, iterations: int = DEFAULT_KMEANS_ITERATIONS) -> np.ndarray:
    """Cluster labels (n,) for unit rows into exactly k non-empty groups, deterministically.

    Cosine k-means seeded with the first k rows (callers pass rows in frequency order, so the most
    frequent tags seed the groups). An empty group takes the point that fits its own group worst.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    centroids = vectors[:k].copy()
    labels = np.full(n, -1)
    for _ in range(iterations):
        similarities = vectors @ centroids.T
        new_labels = np.argmax(similarities, axis=1)
        fit = similarities[np.arange(n), new_labels]
        _fill_empty_groups(new_labels, fit, k)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for group in range(k):
            total = vectors[labels == group].sum(axis=0)
            norm = np.linalg.norm(total)
            # Opposite members can cancel out; the group's first member then stands in.
            centroids[group] = total / norm if norm > 1e-12 else vectors[np.argmax(labels == group)]
    return labels


def _fill_empty_groups(labels: np.ndarray, fit: np.ndarray, k: int) -> None:
    sizes = np.bincount(labels, minlength=k)
    for group in np.flatnonzero(sizes == 0):
        movable = sizes[labels] > 1
        worst = int(np.flatnonzero(movable)[np.argmin(fit[movable])])
        sizes[labels[worst]] -= 1
        labels[worst] = group
        sizes[group] = 1  # alone in its group now, so never moved again
