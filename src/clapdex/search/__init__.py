"""Search: text, audio and concept queries; dense, concept and hybrid ranking; exact explanations.

    query.py     parsing concept terms, query vectors, concept steering
    engine.py    in-memory scoring state of one index (dense, exact concept scores, ranking)
    searcher.py  one query end to end: encode, score, rank, explain
    results.py   the typed results (dataclasses)

Most callers want `clapdex.api.open_index(path).search(...)`.
"""

from clapdex.search.engine import DEFAULT_ALPHA, MODES, SearchEngine
from clapdex.search.query import parse_concept_term
from clapdex.search.results import (LOW_FIDELITY, ConceptTerm, ConceptWeight, Explanation,
                                    QueryInfo, SearchResult, SearchResults, SharedConcept)
from clapdex.search.searcher import Searcher

__all__ = ["DEFAULT_ALPHA", "MODES", "LOW_FIDELITY", "SearchEngine", "Searcher", "SearchResult",
           "SearchResults", "Explanation", "ConceptTerm", "ConceptWeight", "SharedConcept",
           "QueryInfo", "parse_concept_term"]
