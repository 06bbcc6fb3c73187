# token-projector: every command a developer or CI needs. A fresh machine needs only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Go-built tools for the tests (kustomize renders manifests/); skipped when the machine has no Go.
TOOLS  := .tools/bin
KUSTOMIZE_VERSION := v5.8.2
HELM_VERSION := v4.3.2
# Helm 3 still has security fixes (until 2027-02-10): the chart is rendered and linted with it too
HELM3_VERSION := v3.22.0
# promtool: the Prometheus Go module's version of Prometheus 3.16.0
PROMETHEUS_VERSION := v0.316.0
# CRDs the e2e tests install to dry-run the chart's cert-manager and Prometheus Operator objects
PROMETHEUS_OPERATOR_VERSION := v0.85.0
CERT_MANAGER_VERSION := v1.21.2
CRDS := .tools/crds
CRDS_STAMP := $(CRDS)/.$(PROMETHEUS_OPERATOR_VERSION)-$(CERT_MANAGER_VERSION)
GO_MODULE_DIR = $$(go mod download -json $(1) | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
GO     := $(shell command -v go)

.PHONY: help install tools test lint format run certs e2e-deps e2e node-deps images image-deps bench-deps bench bench-mypyc reliability clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP) ## create .venv with the package and its test tools

$(TOOLS)/kustomize:
	GOBIN=$(abspath $(TOOLS)) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(TOOLS)/helm:
	GOBIN=$(abspath $(TOOLS)) GOFLAGS=-mod=mod go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

$(TOOLS)/helm3:
	rm -rf $(TOOLS)/.helm3 && GOBIN=$(abspath $(TOOLS))/.helm3 GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@$(HELM3_VERSION)
	mv $(TOOLS)/.helm3/helm $@ && rmdir $(TOOLS)/.helm3

$(TOOLS)/promtool:
	GOBIN=$(abspath $(TOOLS)) GOFLAGS=-mod=mod go install github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION)

$(CRDS_STAMP):
	rm -rf $(CRDS) && mkdir -p $(CRDS)
	dir=$(call GO_MODULE_DIR,github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION)) \
	  && cp $$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
	        $$dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml $(CRDS)/
	dir=$(call GO_MODULE_DIR,github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION)) \
	  && cp $$dir/deploy/crds/cert-manager.io_certificates.yaml $$dir/deploy/crds/cert-manager.io_issuers.yaml $(CRDS)/
	chmod 0644 $(CRDS)/*.yaml
	touch $@

tools: $(TOOLS)/kustomize $(TOOLS)/helm $(TOOLS)/helm3 $(TOOLS)/promtool $(CRDS_STAMP) ## build kustomize, helm (4 and 3), promtool (Go) and fetch the CRDs the tests install

# The node tests' images are rebuilt for each run as root where buildah is installed (`make node-deps`; cached layers).
NODE_IMAGES := $(if $(shell command -v buildah),$(if $(filter 0,$(shell id -u)),images))
test: $(STAMP) $(if $(GO),tools) $(NODE_IMAGES) ## run the whole test suite (e2e too, once `make e2e-deps` has built it)
	$(BIN)/pytest

e2e-deps: ## build etcd, kube-apiserver and kubectl for the e2e tests, and a node's parts (Go; cached outside git)
	tests/e2e/build.sh
	$(MAKE) --no-print-directory node-deps

# A real node for tests/node/: Debian's runc and image tools (apt), then the kubelet and containerd (Go, cached).
NODE_DEBS := runc buildah podman mmdebstrap iptables gcc libc6-dev util-linux
node-deps: ## the kubelet (the e2e module's Kubernetes version), containerd, runc and the image tools
	@( for tool in runc buildah podman mmdebstrap iptables gcc nsenter; do command -v $$tool || exit 1; done; \
	   [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] ) >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && export DEBIAN_FRONTEND=noninteractive \
	  && { apt-get install -y -qq --no-install-recommends --no-upgrade $(NODE_DEBS) \
	       || { apt-get update -qq && apt-get install -y -qq --no-install-recommends --no-upgrade $(NODE_DEBS); }; }; } \
	  || { echo "the node tests need: apt-get install $(NODE_DEBS)" >&2; exit 2; }
	tests/node/build.sh

images: ## build the webhook's and the example's images from their Dockerfiles, and a pause image (buildah, no registry)
	tests/node/images.sh

e2e: $(STAMP) tools e2e-deps ## only the end-to-end tests against a real kube-apiserver
	$(BIN)/pytest tests/e2e

IMAGE_DEBS := python3.11-venv util-linux mount iproute2
image-deps: # Debian's python3.11 + venv (the image test's stand-in for the base image's Python), unshare, setpriv, ip
	@( /usr/bin/python3.11 -c 'import ensurepip, venv' && for tool in unshare setpriv mount ip; do \
	     command -v $$tool || exit 1; done ) >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq --no-upgrade $(IMAGE_DEBS) || { apt-get update -qq && apt-get install -y -qq --no-upgrade $(IMAGE_DEBS); }; }; } \
	  || { echo "the image test needs: apt-get install $(IMAGE_DEBS)" >&2; exit 2; }

bench-deps: # wrk (load) and valgrind (instruction counts), from Debian's packages
	@missing=$$(for t in wrk valgrind callgrind_control; do command -v $$t >/dev/null || printf "%s " $$t; done); \
	  [ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq wrk valgrind || { apt-get update -qq && apt-get install -y -qq wrk valgrind; }; }; } \
	  || { echo "needed: $$missing(apt-get install wrk valgrind)" >&2; exit 2; }

bench: $(STAMP) bench-deps ## instructions per request (callgrind), the review's microbenchmark, wall clock (wrk), the library
	$(BIN)/python -m bench.instructions
	$(BIN)/python -m bench.micro
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.verify
	$(BIN)/python -m bench.adapters --instructions

bench-mypyc: $(STAMP) bench-deps ## the instruction counts with webhook/core compiled by mypyc beside them (needs gcc)
	$(BIN)/python -m bench.instructions --mypyc

reliability: $(STAMP) bench-deps ## faults under load: certificate rotation, SIGTERM, a sustained run
	$(BIN)/python -m bench.reliability

lint: $(STAMP) ## ruff and mypy --strict over code and tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

admission-policy: $(STAMP) ## generate the policy engine's file for the chart and manifests/components/admission-policy
	$(BIN)/token-projector policy > charts/token-projector/files/admission-policy/admission-policy.yaml

certs: $(STAMP) ## make development certificates in certs/ (kept if they exist)
	$(BIN)/token-projector certs --if-missing --dns-name localhost --ip 127.0.0.1

run: certs ## serve the webhook on https://localhost:8443 (no cluster needed)
	$(BIN)/token-projector serve --address 127.0.0.1 --drain-seconds 0

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache .hypothesis
