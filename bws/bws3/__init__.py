"""Code generated from protos/bws/bws3 (BioID's BWS 3 API, wire-identical) by `make protos`."""
