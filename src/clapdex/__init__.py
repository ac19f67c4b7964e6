"""clapdex: search and audit audio collections through named sound concepts."""

__version__ = "0.1.0"
