# The project's commands. Every target works on a bare machine with python3 (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PROTOS    := $(wildcard protos/bws/v1/*.proto protos/bws/bws3/*.proto)
GENERATED := $(patsubst protos/%.proto,%_pb2.py,$(PROTOS))

.PHONY: install lock protos run test bench bench-bws3 bench-video bench-identify bench-liveness bench-load bench-match bench-admin bench-engine lint typecheck clean

install: $(STAMP)

# Everything comes from uv.lock (every package pinned, with its hashes): nothing is resolved at
# install time. uv itself is pinned with its hashes in deploy/uv.txt.
$(STAMP): pyproject.toml uv.lock deploy/uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r deploy/uv.txt
	$(BIN)/uv sync --frozen --inexact --quiet
	printf '#!/bin/sh\nexec "$$(dirname "$$0")/python" -m bws.admin "$$@"\n' > $(BIN)/bws-admin
	$(BIN)/python -m bws.models  # the float32 expansions of the model files, checked by digest
	chmod +x $(BIN)/bws-admin
	touch $@

# After a change of pyproject.toml's dependencies: resolve again and write uv.lock.
lock:
	test -x $(BIN)/uv || ($(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --require-hashes -r deploy/uv.txt)
	$(BIN)/uv lock

protos: $(GENERATED)

bws/%_pb2.py: protos/bws/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $<

run: install protos
	$(BIN)/python -m bws.devrun

test: install protos
	$(BIN)/python -m pytest

bench: bench-engine bench-identify bench-match bench-liveness bench-load bench-bws3 bench-video bench-admin

bench-liveness: install protos
	$(BIN)/python -m tests.bench.liveness

# The peer (deepface) runs in a virtualenv of its own, from hash-pinned requirements.
bench-engine: install protos .venv-peer/.installed
	$(BIN)/python -m tests.bench.engine

.venv-peer/.installed: tests/bench/peer/requirements.txt
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install --quiet --require-hashes -r tests/bench/peer/requirements.txt
	touch $@

bench-match: install protos
	$(BIN)/python -m tests.bench.calibrate_match

bench-load: install protos
	$(BIN)/python -m tests.bench.load

bench-bws3: install protos
	$(BIN)/python -m tests.bench.bws3

bench-video: install protos
	$(BIN)/python -m tests.bench.video

bench-identify: install protos
	$(BIN)/python -m tests.bench.identify
	$(BIN)/python -m tests.bench.identify_scale

bench-admin: install protos
	$(BIN)/python -m tests.bench.admin

lint: install
	$(BIN)/ruff check .

typecheck: install protos
	$(BIN)/mypy bws gateway enroll_service liveness_service

clean:
	rm -rf $(VENV) .venv-peer bws/*/*_pb2.py bws/*/*_pb2_grpc.py bws/*/*_pb2.pyi .pytest_cache test-artifacts
