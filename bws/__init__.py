"""Code shared by the gateway and both gRPC services: settings, storage, images, the face engine.

``bws.v1`` holds the Python modules generated from ``protos/bws/v1`` by ``make protos``.
"""

__version__ = "0.1.0"
