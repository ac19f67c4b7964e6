"""Concept vocabularies: the built-in lists shipped in clapdex/data and user text files.

A vocabulary file is UTF-8 text with one concept per line. Loading normalises each line the same way
for built-ins and user files, so the same list always gets the same content hash:

- whitespace is stripped and inner runs of whitespace become one space;
- text is lower-cased (concept names are labels; "Dog" and "dog" are one concept);
- blank lines and lines starting with '#' (comments) are dropped;
- duplicates are dropped, keeping the first occurrence, so the order of the file is preserved.

A spec naming a built-in ("default") loads it; anything else is read as a path. To load a file whose
name equals a built-in, write it as a path ("./default").

Limits: at most MAX_CONCEPTS concepts (the solver keeps the K x K Gram matrix in memory: 0.8 GB at
10,000, 4.2 GB at 20,000) and MAX_CONCEPT_CHARS characters per concept (the database column).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

from clapdex.errors import VocabularyError

MAX_CONCEPTS = 10_000
MAX_CONCEPT_CHARS = 512

DEFAULT_VOCABULARY = "default"


@dataclass(frozen=True)
class ConceptWeight:
    """A named concept with a weight (a segment's or a window's own concept, or a query's)."""

    concept: str
    weight: float


_BUILTIN_PREFIX = "vocab_"
_BUILTIN_SUFFIX = ".txt"
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Vocabulary:
    """K named concepts; concept id k is the position of concepts[k]."""

    name: str
    concepts: tuple[str, ...]

    @property
    def content_hash(self) -> str:
        """sha256 hex of the normalised concepts joined by newlines (the name is not part of it)."""
        return hashlib.sha256("\n".join(self.concepts).encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.concepts)


def normalize_concept(text: str) -> str:
    """One concept line as stored: trimmed, single-spaced, lower case."""
    return _WHITESPACE.sub(" ", text).strip().lower()


def parse_concepts(lines: Iterable[str]) -> tuple[str, ...]:
    """Normalised concepts from lines of a vocabulary file: no blanks, comments or duplicates."""
    seen: set[str] = set()
    concepts: list[str] = []
    for line in lines:
        concept = normalize_concept(line)
        if not concept or concept.startswith("#") or concept in seen:
            continue
        seen.add(concept)
        concepts.append(concept)
    return tuple(concepts)


def _data_dir():
    return resources.files("clapdex") / "data"


def builtin_vocabularies() -> list[str]:
    """Names of the vocabularies shipped with clapdex (data/vocab_<name>.txt), sorted."""
    names = []
    for entry in _data_dir().iterdir():
        filename = entry.name
        if filename.startswith(_BUILTIN_PREFIX) and filename.endswith(_BUILTIN_SUFFIX):
            names.append(filename[len(_BUILTIN_PREFIX):-len(_BUILTIN_SUFFIX)])
    return sorted(names)


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or (os.altsep is not None and os.altsep in spec)


def load_vocabulary(spec: str | os.PathLike) -> Vocabulary:
    """A built-in vocabulary by name, or a vocabulary text file by path (named after its stem)."""
    text_spec = os.fspath(spec)
    if not text_spec.strip():
        raise VocabularyError("empty vocabulary name; use 'default' or a path to a text file")
    if not _looks_like_path(text_spec) and text_spec in builtin_vocabularies():
        resource = _data_dir() / f"{_BUILTIN_PREFIX}{text_spec}{_BUILTIN_SUFFIX}"
        return _vocabulary_from_text(text_spec, resource.read_text(encoding="utf-8"), f"built-in {text_spec!r}")
    path = Path(text_spec).expanduser()
    if not path.exists():
        builtins = ", ".join(builtin_vocabularies())
        raise VocabularyError(f"{text_spec}: no such vocabulary file or built-in vocabulary (built-ins: {builtins})")
    if not path.is_file():
        raise VocabularyError(f"{text_spec}: not a file; a vocabulary is a text file with one concept per line")
    return _vocabulary_from_text(path.stem, _read_text(path), str(path))


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise VocabularyError(f"{path}: cannot read ({error.strerror or error})") from None
    if b"\x00" in data:
        raise VocabularyError(f"{path}: looks like a binary file; a vocabulary is UTF-8 text, one concept per line")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise VocabularyError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None


def _vocabulary_from_text(name: str, text: str, where: str) -> Vocabulary:
    concepts = parse_concepts(text.splitlines())
    if not concepts:
        raise VocabularyError(f"{where}: no concepts (every line is blank or a '#' comment)")
    check_size(concepts, where)
    return Vocabulary(name=name, concepts=concepts)


def check_size(concepts: tuple[str, ...], where: str) -> None:
    """Refuse vocabularies the index cannot hold (before anything is created)."""
    if len(concepts) > MAX_CONCEPTS:
        gram_gb = 8 * len(concepts) ** 2 / 1e9
        raise VocabularyError(f"{where}: {len(concepts)} concepts; at most {MAX_CONCEPTS} (the "
                              f"decomposition would need a {gram_gb:.1f} GB matrix); use a smaller "
                              "vocabulary")
    long = next((c for c in concepts if len(c) > MAX_CONCEPT_CHARS), None)
    if long is not None:
        raise VocabularyError(f"{where}: a concept of {len(long)} characters ({long[:40]!r}...); "
                              f"at most {MAX_CONCEPT_CHARS}")


def write_vocabulary(concepts: Iterable[str], path: str | os.PathLike, header: Iterable[str] = ()) -> Path:
    """Writes concepts one per line (normalised, deduplicated), after optional '#' header lines."""
    cleaned = parse_concepts(concepts)
    if not cleaned:
        raise VocabularyError("refusing to write an empty vocabulary")
    lines = [f"# {line}".rstrip() for line in header] + list(cleaned)
    target = Path(path).expanduser()
    try:
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as error:
        raise VocabularyError(f"{target}: cannot write ({error.strerror or error})") from None
    return target
