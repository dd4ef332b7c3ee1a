# Torchgate developer commands. Everything runs from the repo-local virtualenv .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
GATEWAY_VENV := .venv-gateway
DOCUMENTS_VENV := .venv-documents
PROTOS := $(wildcard protos/torchgate/v1/*.proto)
K8S_MANIFESTS := $(shell find ops/docker/k8s -name '*.yaml')

.PHONY: install protos check-protos run start stop health images test test-gateway-isolated test-documents-isolated redis-server postgresql promtool lint docs chromium bench bench-gateway fuzz mutate clean

install: $(INSTALLED)

# torch==2.13.0 first: that exact spec takes the CPU wheel on disk instead of gigabytes of CUDA.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[gateway,worker,documents,dev]'
	touch $@

protos: $(INSTALLED)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. $(PROTOS)

# CI: the committed stubs must be what `make protos` produces.
check-protos: protos
	git diff --exit-code -- torchgate/v1

run: $(INSTALLED)
	scripts/start.sh --follow

start: $(INSTALLED)
	scripts/start.sh

stop:
	scripts/stop.sh

health:
	scripts/health.sh

# Both images with this machine's engine (Docker, else Podman, installed where missing); the worker's CUDA variant
# where an NVIDIA GPU is present, else CPU; a local Debian base where no image registry answers (scripts/images.sh).
images: $(INSTALLED)
	scripts/images.sh

# Offline checks of the deployment files too: Kubernetes schemas (kubernetes-validate), Dockerfiles (hadolint),
# the compose file (Debian's docker-compose).
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/kubernetes-validate --strict --quiet $(filter-out %/kustomization.yaml,$(K8S_MANIFESTS))
	$(BIN)/hadolint ops/docker/Dockerfile.*
	command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)
	docker-compose -f ops/docker/docker-compose.yml config -q
	docker-compose -f ops/docker/docker-compose.yml -f ops/docker/docker-compose.two-models.yml config -q
	docker-compose -f ops/docker/docker-compose.yml -f ops/docker/docker-compose.gpu.yml config -q

# The response cache's and rate limits' tests start Debian's redis-server, and the batch jobs' tests Debian's
# PostgreSQL, as an operator would; the docs site's test opens the built site in Debian's headless Chromium.
test: $(INSTALLED) lint docs redis-server postgresql chromium promtool test-gateway-isolated test-documents-isolated
	$(BIN)/python -m pytest

redis-server:
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)

postgresql:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)

# The alert rules' tests run Debian's promtool (tests/unit/test_alerts.py).
promtool:
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null)

chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The documentation site (MkDocs Material) into .run/site; --strict: a broken link or a missing page fails it.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The gateway's own tests in a virtualenv that has only the gateway dependency set: no torch anywhere.
test-gateway-isolated:
	test -x $(GATEWAY_VENV)/bin/python || $(PYTHON) -m venv $(GATEWAY_VENV)
	$(GATEWAY_VENV)/bin/pip install -q -e '.[gateway]' pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0 httpx==0.28.1
	! $(GATEWAY_VENV)/bin/python -c 'import torch' 2>/dev/null
	! $(GATEWAY_VENV)/bin/python -c 'import openvino' 2>/dev/null
	$(GATEWAY_VENV)/bin/python -m pytest -q tests/unit/gateway

# The documents worker's tests in a virtualenv that has only its dependency set (Docling, tokenizers): no torch.
test-documents-isolated:
	test -x $(DOCUMENTS_VENV)/bin/python || $(PYTHON) -m venv $(DOCUMENTS_VENV)
	$(DOCUMENTS_VENV)/bin/pip install -q -e '.[documents]' pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0
	! $(DOCUMENTS_VENV)/bin/python -c 'import torch' 2>/dev/null
	! $(DOCUMENTS_VENV)/bin/python -c 'import openvino' 2>/dev/null
	$(DOCUMENTS_VENV)/bin/python -m pytest -q tests/unit/documents

bench: $(INSTALLED)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench

# This checkout's gateway against BASE's on one mesh, loads alternating (bench/gateway_change.py).
bench-gateway: $(INSTALLED)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.gateway_change $(BASE)

# Schemathesis, every check, >= 1,000 generated cases against a mesh of its own (schemathesis.toml says why
# two checks accept 504 and 413). Not part of `make test`, which runs a shorter pass of the same.
fuzz: $(INSTALLED)
	TORCHGATE_RUN_DIR=.run/fuzz TORCHGATE_GATEWAY_PORT=$${FUZZ_PORT:-8100} TORCHGATE_GPU_PORT=50151 \
	TORCHGATE_EMBEDDING_PORT=50152 TORCHGATE_RERANKING_PORT=50153 TORCHGATE_CLASSIFIER_PORT=50154 \
	TORCHGATE_GPU_METRICS_PORT=0 TORCHGATE_EMBEDDING_METRICS_PORT=0 TORCHGATE_RERANKING_METRICS_PORT=0 \
	TORCHGATE_CLASSIFIER_METRICS_PORT=0 bash -c 'scripts/start.sh && trap scripts/stop.sh EXIT && \
	$(BIN)/schemathesis run http://127.0.0.1:$${FUZZ_PORT:-8100}/openapi.json --checks all --max-examples 150 \
	  --generation-deterministic --workers 1 --request-timeout 30 --suppress-health-check all'

# Mutation testing, not part of `make test`: mutmut plants one-line bugs in gateway/ and services/runtime/
# ([tool.mutmut] in pyproject.toml) and runs the unit tests that cover each; stops after MUTATE_MINUTES and scores
# the mutants it judged. `.venv/bin/mutmut results` lists the survivors, `mutmut show NAME` shows one.
mutate: $(INSTALLED)
	rm -rf mutants
	timeout $$(( $${MUTATE_MINUTES:-60} * 60 )) $(BIN)/mutmut run --max-children $$(nproc) >/dev/null || true
	$(BIN)/mutmut export-cicd-stats >/dev/null
	$(BIN)/python -m tests.mutation_score mutants/mutmut-cicd-stats.json

clean:
	rm -rf $(VENV) $(GATEWAY_VENV) .run mutants
