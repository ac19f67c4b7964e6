"""Parsing what users ask for: concept terms ("dog", "-speech", "dog:2"), path globs and query
vectors."""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from clapdex.errors import QueryError, Remedy
from clapdex.storage.naming import folded
from clapdex.vectors import mean_of_unit_rows


@dataclass(frozen=True)
class ConceptTermSpec:
    """A parsed concept term: concept id in the index's vocabulary and its signed weight."""

    concept_id: int
    name: str
    weight: float


def parse_concept_term(spec: str) -> tuple[str, float]:
    """'dog' -> (dog, 1); '-speech' -> (speech, -1); 'dog:2' -> (dog, 2); '-rain:0.5' -> (rain, -0.5).

    A trailing ':<number>' is a weight; anything else after a colon stays part of the name.
    """
    text = spec.strip()
    sign = 1.0
    if text.startswith("-"):
        sign, text = -1.0, text[1:].strip()
    elif text.startswith("+"):
        text = text[1:].strip()
    weight = 1.0
    name, colon, tail = text.rpartition(":")
    if colon:
        try:
            weight = float(tail)
            text = name.strip()
        except ValueError:
            pass
    if not text:
        raise QueryError(f"empty concept name in {spec!r}")
    if not np.isfinite(weight) or weight == 0:
        raise QueryError(f"concept weight must be a non-zero number in {spec!r}")
    return text, sign * weight


class ConceptNames:
    """A vocabulary's names and their lookups (exact, then case-insensitive; the first of names that
    differ only in case wins). Built once per index version: at K = 4,000 the two dicts cost ~3 ms,
    which was most of a concept-only query when every query built them."""

    def __init__(self, names: Sequence[str]):
        self.names = names
        self.position = {name: i for i, name in enumerate(names)}
        self.lower = {name.lower(): i for i, name in reversed(list(enumerate(names)))}

    def find(self, name: str) -> int | None:
        return self.position.get(name, self.lower.get(name.lower()))


def resolve_concepts(specs: Iterable[str | tuple[str, float]], vocabulary: ConceptNames
                     ) -> list[ConceptTermSpec]:
    """Match parsed terms to the vocabulary; unknown names raise QueryError with the closest names.

    Matching is exact first, then case-insensitive. A concept named twice has its weights summed.
    """
    names, lower = vocabulary.names, vocabulary.lower
    weights: dict[int, float] = {}
    for spec in specs:
        name, weight = parse_concept_term(spec) if isinstance(spec, str) else (spec[0], float(spec[1]))
        concept_id = vocabulary.find(name)
        if concept_id is None:
            close = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)
            hint = f"; closest: {', '.join(names[lower[c]] for c in close)}" if close else ""
            raise QueryError(f"unknown concept {name!r}{hint}",
                             remedy=None if close else Remedy("list-vocabulary"))
        weights[concept_id] = weights.get(concept_id, 0.0) + weight
    return [ConceptTermSpec(i, names[i], w) for i, w in weights.items() if w != 0]


def path_globs(path: str | Sequence[str] | None) -> tuple[str, ...]:
    """search's `path`: None, one glob or several (ORed) -> the non-empty globs, each checked."""
    globs = () if path is None else (path,) if isinstance(path, str) else tuple(path)
    if not all(isinstance(glob, str) for glob in globs):
        raise QueryError("a path filter is a glob (text) or a list of globs")
    globs = tuple(glob for glob in globs if glob)
    for glob in globs:
        check_path_glob(glob)
    return globs


def path_matcher(globs: Sequence[str]) -> Callable[[str], bool]:
    """Whether a stored path matches any of `globs`. The match ignores case and Unicode
    normalisation on both sides (`*.wav` matches `KICK.WAV`, an NFD `é` matches an NFC one), as
    the indexer takes `.WAV` for `.wav`: a filter that hides a file is worse than one that shows
    one more. A glob that starts with neither '/' nor '*' also matches the end of the path
    ('dogs/*.wav' matches '/data/dogs/a.wav'); '*' also matches '/'."""
    patterns = []
    for glob in map(folded, globs):
        patterns.append(fnmatch.translate(glob))
        if not glob.startswith(("/", "*")):
            patterns.append(fnmatch.translate("*/" + glob))
    regex = re.compile("|".join(patterns))
    return lambda path: regex.match(folded(path)) is not None


def check_path_glob(glob: str) -> None:
    """Refuse a path glob that would silently match nothing it seems to ask for: fnmatch takes a
    '[' that opens no complete set ('[', 'a[b', '[!]') as a literal '[', and a set such as
    '[z-a]' matches no character. '[[]' is how to match a literal '['."""
    shown = repr(glob)
    position = 0
    while (start := glob.find("[", position)) >= 0:
        end = start + 1
        if end < len(glob) and glob[end] == "!":
            end += 1
        if end < len(glob) and glob[end] == "]":  # a ']' first in a set is a member
            end += 1
        end = glob.find("]", end)
        if end < 0:
            raise QueryError(f"path glob {shown} has a '[' with no closing ']'; "
                             "write '[[]' to match a literal '['")
        if fnmatch.translate(glob[start:end + 1]).startswith("(?s:(?!))"):
            raise QueryError(f"path glob {shown}: the set {glob[start:end + 1]!r} matches no "
                             "character (a range must go from low to high, e.g. '[a-z]')")
        position = end + 1
    try:
        re.compile(fnmatch.translate(glob))
    except re.error as error:  # not expected after the checks above; still one line, not a crash
        raise QueryError(f"path glob {shown} is not a valid pattern ({error})") from None


def unit(vector: np.ndarray, what: str = "query") -> np.ndarray:
    """L2-normalise a vector (float64); a zero or non-finite vector is a QueryError."""
    vector = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise QueryError(f"the {what} has no direction (zero or non-finite embedding)")
    return vector / norm


def mean_direction(embeddings: np.ndarray, what: str = "audio query") -> np.ndarray:
    """Unit mean of the L2-normalised rows: one direction for a multi-window audio query."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise QueryError(f"the {what} has a zero or non-finite embedding")
    return unit(mean_of_unit_rows(embeddings), what)


def steer(base: np.ndarray, atoms: np.ndarray, terms: Sequence[ConceptTermSpec]) -> np.ndarray:
    """q = normalize(q̂ + Σ β_j c_j): push a unit query toward (β > 0) or away from (β < 0) concepts.

    c_j are the centred concept atoms (unit vectors), so weight 1 pushes as hard as the query itself
    pulls; a concept's direction is what sets it apart from the average concept.
    """
    query = np.asarray(base, dtype=np.float64).copy()
    for term in terms:
        query += term.weight * atoms[term.concept_id]
    return unit(query, "steered query")
