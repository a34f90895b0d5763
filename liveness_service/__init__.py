"""The liveness service: sample inspection at upload, liveness and challenge-response per try."""

import bws  # noqa: F401  (first: it sets OpenCV's decoder limit before anything imports cv2)
