"""Concept names <-> ids, read on demand, with helpful errors (closest names) for unknown concepts."""

from __future__ import annotations

import difflib

from sqlalchemy import select

from clapdex.errors import Remedy, UnknownConceptError
from clapdex.storage.schema import ConceptRow


class ConceptLookup:
    """The index's vocabulary. Exact names are looked up one by one (unique index on name); the
    whole vocabulary is read only when needed: a case-insensitive match, closest names, or
    naming many ids at once."""

    def __init__(self, store=None, names_by_id: dict[int, str] | None = None):
        self._store = store
        self._by_id: dict[int, str] = {}
        self._by_name: dict[str, int] = {}
        self._complete = False
        if names_by_id is not None:
            self._remember(names_by_id.items())
            self._complete = True

    @classmethod
    def load(cls, store) -> "ConceptLookup":
        return cls(store)

    def _remember(self, pairs) -> None:
        for cid, name in pairs:
            self._by_id[int(cid)] = name
            self._by_name[name] = int(cid)

    def _read(self, statement) -> None:
        with self._store.session() as session:
            self._remember(session.execute(statement).all())

    def _read_all(self) -> None:
        if not self._complete:
            self._read(select(ConceptRow.id, ConceptRow.name))
            self._complete = True

    @property
    def names(self) -> dict[int, str]:
        self._read_all()
        return self._by_id

    def closest(self, name: str, n: int = 3) -> list[str]:
        lowered = {known.lower(): known for known in self.names.values()}
        return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n,
                                                              cutoff=0.6)]

    def id_of(self, name: str, position: int | None = None) -> int:
        if name not in self._by_name and not self._complete:
            self._read(select(ConceptRow.id, ConceptRow.name).where(ConceptRow.name == name))
        if name in self._by_name:
            return self._by_name[name]
        folded = " ".join(name.lower().split())
        candidates = [cid for cid, known in self.names.items()
                      if " ".join(known.lower().split()) == folded]
        if len(candidates) == 1:
            return candidates[0]
        where = "" if position is None else f" at character {position + 1}"
        close = self.closest(name)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownConceptError(f"unknown concept {name!r}{where}{hint}",
                                  remedy=None if close else Remedy("list-concepts"))

    def prefetch(self, names) -> None:
        """Look up many exact names in one query (before calling id_of on each)."""
        missing = sorted(set(names) - set(self._by_name))
        if missing and not self._complete:
            self._read(select(ConceptRow.id, ConceptRow.name).where(ConceptRow.name.in_(missing)))

    def name_of(self, concept_id: int) -> str:
        concept_id = int(concept_id)
        if concept_id not in self._by_id and not self._complete:
            self._read(select(ConceptRow.id, ConceptRow.name).where(ConceptRow.id == concept_id))
        return self._by_id[concept_id]

    def preload(self, concept_ids) -> None:
        """Fetch the names of many ids in one query (before calling name_of on each)."""
        missing = sorted({int(c) for c in concept_ids} - set(self._by_id))
        if missing and not self._complete:
            self._read(select(ConceptRow.id, ConceptRow.name).where(ConceptRow.id.in_(missing)))
