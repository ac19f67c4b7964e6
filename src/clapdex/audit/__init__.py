"""Corpus auditing by concept: prevalence, concept expressions, co-occurrence, low fidelity, reports.

See docs/audit.md for the definitions and the expression language.
"""

from clapdex.audit.cooccurrence import Pair, all_pairs, partners
from clapdex.audit.expression import ExpressionError, parse
from clapdex.audit.files import IndexedFile, resolve_indexed_file
from clapdex.audit.queries import (AuditResult, FileProfile, PoorlyExplained, SegmentMatch, audit,
                                   file_profile, poorly_explained)
from clapdex.audit.stats import ConceptPrevalence, corpus_totals, prevalence

__all__ = ["AuditResult", "ConceptPrevalence", "ExpressionError", "FileProfile", "IndexedFile",
           "Pair", "PoorlyExplained", "SegmentMatch", "all_pairs", "audit", "corpus_totals",
           "file_profile", "parse", "partners", "poorly_explained", "prevalence",
           "resolve_indexed_file"]
