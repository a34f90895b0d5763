"""The HTTP gateway: the BWS Web API over aiohttp, calling the liveness and enrollment services."""

import bws  # noqa: F401  (first: it sets OpenCV's decoder limit before anything imports cv2)
