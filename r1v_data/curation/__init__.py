"""Curation rules over samples: exact and near duplicates (MinHash, image hashes, embeddings),
benchmark decontamination, and the per-sample checks `filter` runs."""
