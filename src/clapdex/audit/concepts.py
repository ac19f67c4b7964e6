"""Concept names -> ids, with helpful errors (closest names) for unknown concepts."""

from __future__ import annotations

import difflib

from sqlalchemy import select

from clapdex.errors import QueryError
from clapdex.storage.schema import ConceptRow


class UnknownConceptError(QueryError):
    """A concept name that is not in the index's vocabulary."""


class ConceptLookup:
    """The index's vocabulary: exact names first, then a unique case-insensitive match."""

    def __init__(self, names_by_id: dict[int, str]):
        self.names = names_by_id
        self._exact = {name: cid for cid, name in names_by_id.items()}
        folded: dict[str, list[int]] = {}
        for cid, name in names_by_id.items():
            folded.setdefault(" ".join(name.lower().split()), []).append(cid)
        self._folded = folded

    @classmethod
    def load(cls, store) -> "ConceptLookup":
        with store.session() as session:
            rows = session.execute(select(ConceptRow.id, ConceptRow.name)).all()
        return cls({int(cid): name for cid, name in rows})

    def closest(self, name: str, n: int = 3) -> list[str]:
        lowered = {n_.lower(): n_ for n_ in self._exact}
        return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n,
                                                              cutoff=0.6)]

    def id_of(self, name: str, position: int | None = None) -> int:
        if name in self._exact:
            return self._exact[name]
        candidates = self._folded.get(" ".join(name.lower().split()), [])
        if len(candidates) == 1:
            return candidates[0]
        where = "" if position is None else f" at character {position + 1}"
        close = self.closest(name)
        hint = f"; closest: {', '.join(close)}" if close else "; list them with: clapdex concepts"
        raise UnknownConceptError(f"unknown concept {name!r}{where}{hint}")

    def name_of(self, concept_id: int) -> str:
        return self.names[int(concept_id)]
