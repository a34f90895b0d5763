"""Code shared by the gateway and both gRPC services: settings, storage, images, the face engine.

``bws.v1`` holds the Python modules generated from ``protos/bws/v1`` by ``make protos``.
"""

import os

__version__ = "0.1.0"

# OpenCV reads its decoder's pixel limit once, when it is first imported: it must be in the
# environment before any module imports cv2. Every process's package imports ``bws`` first
# (gateway/, liveness_service/, enroll_service/ __init__). ``bws.images`` checks the size from
# the header before OpenCV sees the bytes at all; this is the second line.
MAX_IMAGE_PIXELS = 40_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
