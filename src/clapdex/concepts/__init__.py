"""Concept vocabularies, the concept dictionary and the sparse decomposition of embeddings."""
