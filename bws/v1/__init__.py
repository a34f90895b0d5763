"""Generated gRPC and protobuf modules for ``protos/bws/v1`` (made by ``make protos``, not committed)."""
