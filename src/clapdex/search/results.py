"""What a search returns: typed results with their exact explanations (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clapdex.concepts.vocabulary import ConceptWeight  # noqa: F401  (part of the results)

# Below this concept fidelity (cos(Cw, z) on the centred window) the concepts are flagged as a poor
# description of the clip: at f = 0.5 the part of z the concepts miss, sqrt(1 − f²) = 0.87, is
# longer than the part they capture. (Reconstruction fidelity cos(r, â) cannot flag this: μ_A
# alone gives it about ‖μ_A‖, see docs/method.md.)
LOW_FIDELITY = 0.5
LOW_FIDELITY_NOTE = "concepts explain this clip poorly"


@dataclass(frozen=True)
class ConceptTerm:
    """One concept of a segment: its weight w_k and its contribution to the concept score."""

    concept: str
    weight: float
    contribution: float


@dataclass(frozen=True)
class SharedConcept:
    """A concept present in both the audio query and the result segment."""

    concept: str
    query_weight: float
    result_weight: float


@dataclass
class Explanation:
    """Why a segment scored what it did.

    `contributions` + `baseline` add up exactly to the concept score (up to float rounding):
    for a vector query q, contribution_k = w_k ⟨c_k, q⟩ / (n·m) and baseline = ⟨μ_A, q⟩ / m
    (design.md, "Exact explanations"); for a concept-only query contribution_k = β_k w_k over the
    named concepts and the baseline is 0.
    """

    contributions: list[ConceptTerm]     # by |contribution|, largest first
    baseline: float
    concepts: list[ConceptWeight]        # the segment's own concepts, by weight, largest first
    fidelity: float                      # reconstruction fidelity cos(r, â)
    low_fidelity: bool                   # concept_fidelity < LOW_FIDELITY
    shared: list[SharedConcept] | None = None  # audio queries only
    concept_fidelity: float = 0.0        # cos(Cw, z): how much of the clip the concepts explain

    @property
    def note(self) -> str | None:
        return LOW_FIDELITY_NOTE if self.low_fidelity else None


@dataclass
class SearchResult:
    """One ranked file (its best segment) or, with segments=True, one segment."""

    rank: int
    path: str
    file_id: int
    segment_id: int
    start: float
    end: float
    score: float      # the fused score the ranking used
    dense: float      # cos(a, q)
    concept: float    # ⟨r, q⟩, or Σ β_k w_k for concept-only queries
    explanation: Explanation
    missing: bool = False  # the file is no longer on disk (checked when the page was made)
    flags: list[str] = field(default_factory=list)  # "silent", "clipped" (read for the page shown)


@dataclass
class QueryInfo:
    """What was searched for, after parsing."""

    kind: str                                   # "text" | "audio" | "concepts"
    text: str | None = None
    audio: str | None = None
    audio_indexed: bool = False                 # stored embeddings were used, nothing re-encoded
    audio_file: str | None = None               # the indexed file `audio` named, when audio_indexed
    steering: list[ConceptWeight] = field(default_factory=list)
    query_concepts: list[ConceptWeight] | None = None  # decomposition of an audio query


@dataclass
class SearchResults:
    """A ranked page of results. Iterable; len() is the number of results on this page."""

    query: QueryInfo
    mode: str
    alpha: float | None       # hybrid weight of the dense score (None outside hybrid mode)
    segments: bool            # True: one result per segment, else one per file
    offset: int
    results: list[SearchResult]

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i):
        return self.results[i]
