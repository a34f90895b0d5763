"""The enrollment service: face embeddings and encrypted templates per class (BCID)."""
