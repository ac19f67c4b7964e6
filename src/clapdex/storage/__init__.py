"""The index on disk: a database (source of truth) and a FAISS index derived from it."""
