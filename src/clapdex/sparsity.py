"""How sparse a concept decomposition is: one value type, checked in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from clapdex.errors import DecompositionError


@dataclass(frozen=True)
class Sparsity:
    """The Lasso penalty λ (`lam`, ½‖Cw − z‖² + λ‖w‖₁), or at most `max_concepts` concepts per
    vector, never both; neither means "the default" (DEFAULT_LAMBDA for a decomposition, the
    stored setting for an existing index). Bad values raise DecompositionError when it is made."""

    lam: float | None = None
    max_concepts: int | None = None

    def __post_init__(self) -> None:
        if self.lam is not None and self.max_concepts is not None:
            raise DecompositionError("give either λ (lambda) or a maximum number of concepts, "
                                     "not both")
        if self.lam is not None and not (math.isfinite(self.lam) and self.lam >= 0):
            raise DecompositionError(f"lambda must be a finite number >= 0, got {self.lam!r}")
        if self.max_concepts is not None and int(self.max_concepts) < 1:
            raise DecompositionError(f"the maximum number of concepts must be at least 1, "
                                     f"got {self.max_concepts}")

    @property
    def is_default(self) -> bool:
        """Neither λ nor max-concepts given."""
        return self.lam is None and self.max_concepts is None

    def otherwise(self, fallback: "Sparsity") -> "Sparsity":
        """This one, or `fallback` (e.g. an index's stored setting) when this one is the default."""
        return fallback if self.is_default else self

    @property
    def label(self) -> str:
        if self.max_concepts is not None:
            return f"N={self.max_concepts}"
        return f"λ={self.lam:g}"
