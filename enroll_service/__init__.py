"""The enrollment service: face embeddings and encrypted templates per class (BCID)."""

import bws  # noqa: F401  (first: it sets OpenCV's decoder limit before anything imports cv2)
