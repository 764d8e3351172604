# llamafactory-k8s: every entry point a person or CI uses. `make help` lists them.
# Each target sets up what it needs (.venv, tools under .tools/) and a second run rebuilds nothing.

SHELL := /bin/bash
.DEFAULT_GOAL := help

include hack/versions.env

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LFK := $(VENV)/bin/lfk
PYTEST := $(VENV)/bin/pytest
TOOLS := .tools
HELM3 := $(TOOLS)/helm-$(HELM3_VERSION)/helm
HELM4 := $(TOOLS)/helm-$(HELM4_VERSION)/helm
HELM_UNITTEST := $(TOOLS)/helm-unittest-$(HELM_UNITTEST_VERSION)/helm-unittest
HELM_DOCS := $(TOOLS)/helm-docs-$(HELM_DOCS_VERSION)/helm-docs
CRDS := $(TOOLS)/crds-trainer-$(KUBEFLOW_TRAINER_VERSION)-pytorch-$(KUBEFLOW_TRAINING_OPERATOR_VERSION)-jobset-$(JOBSET_VERSION)-kuberay-$(KUBERAY_VERSION)
GITOPS_CRDS := $(TOOLS)/gitops-crds-argocd-$(ARGOCD_VERSION)-source-controller-$(FLUX_SOURCE_CONTROLLER_VERSION)-helm-controller-api-$(FLUX_HELM_CONTROLLER_API_VERSION)-controller-gen-$(CONTROLLER_TOOLS_VERSION)
HELMFILE := $(TOOLS)/helmfile-$(HELMFILE_VERSION)/helmfile
KUEUE := $(TOOLS)/kueue-$(KUEUE_VERSION)/.complete
JOBSET := $(TOOLS)/jobset-$(JOBSET_VERSION)/.complete
TRAINER := $(TOOLS)/trainer-$(KUBEFLOW_TRAINER_VERSION)/.complete
TRAINING_OPERATOR := $(TOOLS)/training-operator-$(KUBEFLOW_TRAINING_OPERATOR_VERSION)/.complete
KUBERAY := $(TOOLS)/kuberay-$(KUBERAY_VERSION)/.complete
# in the order they build: a family of tools one after the other (hack/build-tools.sh keeps one family in Go's
# caches): helmfile after helm's tools, the controllers together
CLUSTER_TOOLS := $(TOOLS)/kube-$(KUBE_VERSION)/kubectl $(HELMFILE) $(TOOLS)/etcd-$(ETCD_VERSION)/.complete $(TOOLS)/kwok-$(KWOK_VERSION)/.complete $(CRDS)/.complete $(GITOPS_CRDS)/.complete $(JOBSET) $(TRAINER) $(TRAINING_OPERATOR) $(KUBERAY) $(KUEUE)
SPECS := $(wildcard values/*/experiment.yaml)
EXP ?=
COMPONENT ?= all
PYTEST_ARGS ?=

export LFK_HELM := $(abspath $(HELM3))
# the cluster the operations talk to is your kubeconfig's current context: `make cluster-up` adds the local
# cluster's (lfk-local) and selects it, `make cluster-down` removes it again

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------------------------------------- set-up
$(VENV)/.stamp-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# pip keeps every downloaded wheel until the whole install ends (about 5 GB for torch's stack and
# LLaMA-Factory's): the locked packages go in a few at a time (hack/pip-stepwise.py), so the peak is what stays,
# about 6.6 GB (measured), not 11; the last install adds the project and downloads only what a stale lock lacks
LOCK = requirements/llamafactory.txt
$(VENV)/.stamp-llamafactory: pyproject.toml $(LOCK) $(VENV)/.stamp-dev
	@echo "installing LLaMA-Factory and torch into $(VENV) from $(LOCK) (about 6.6 GB, 2 to 5 minutes the first time)"
	$(PY) hack/pip-stepwise.py install $(LOCK)
	$(PY) -m pip install --quiet --no-cache-dir -e '.[dev,llamafactory]'
	touch $@

.PHONY: lock
lock: venv ## Re-resolve requirements/llamafactory.txt from pyproject.toml (pip's dry run downloads about 5 GB, kept nowhere)
	$(PY) hack/pip-stepwise.py lock $(LOCK) -e '.[dev,llamafactory]'

.PHONY: venv llamafactory tools cluster-tools
venv: $(VENV)/.stamp-dev ## Create .venv with the generator and the test tools
llamafactory: $(VENV)/.stamp-llamafactory ## Install the pinned LLaMA-Factory (+ CPU-capable torch) into .venv
tools: $(HELM3) $(HELM4) $(HELM_UNITTEST) $(HELM_DOCS) ## Build helm 3, helm 4, helm-unittest and helm-docs from the Go module proxy
cluster-tools: $(CLUSTER_TOOLS) ## Build etcd, kube-apiserver/controller-manager/scheduler, kubectl, kwok, helmfile, JobSet, Kubeflow Trainer, the training operator, KubeRay, Kueue; fetch operator and GitOps CRDs
# what `make demo` runs: helm 3 and the control plane with kwok; helm 4, helm-unittest, helm-docs, helmfile and
# the operator and GitOps CRDs, JobSet and Kueue are only for the tests (a cold demo builds at least 4 minutes less: helm 4,
# helm-unittest and helm-docs alone took 251 s cold)
DEMO_TOOLS := $(HELM3) $(TOOLS)/kube-$(KUBE_VERSION)/kubectl $(TOOLS)/etcd-$(ETCD_VERSION)/.complete $(TOOLS)/kwok-$(KWOK_VERSION)/.complete
PAUSE := $(TOOLS)/pause-$(KUBE_VERSION)/.complete
NODE_TOOLS := $(TOOLS)/containerd-$(CONTAINERD_VERSION)/.complete $(TOOLS)/kube-node-$(KUBE_VERSION)/.complete $(TOOLS)/coredns-$(COREDNS_VERSION)/.complete $(PAUSE)
.PHONY: node-tools
node-tools: $(NODE_TOOLS) ## Build containerd, kubelet, kube-proxy, CoreDNS, pause; install runc and the CNI plugins from Debian
	hack/install-debs.sh node

# before building: what is left, the disk it needs at its peak, and a stop with the figures when it is short
.PHONY: disk-check-demo disk-check-test
disk-check-demo:
	@$(PYTHON) hack/disk-check.py demo $(DEMO_TOOLS) $(NODE_TOOLS)
TEST_TOOLS = $(HELM3) $(HELM4) $(HELM_UNITTEST) $(HELM_DOCS) $(CLUSTER_TOOLS) $(NODE_TOOLS)
disk-check-test:
	@$(PYTHON) hack/disk-check.py test $(TEST_TOOLS)

.PHONY: images image-archives browser setup-demo setup-test demo-specs drop-go-caches
images: node-tools image-archives ## Build the real node's images (llamafactory, vllm-cpu, pause) as OCI archives, cached by a hash of their inputs
# the archives need only the pause binary of the node's tools, so they can build beside the others
image-archives: $(PAUSE)
	hack/install-debs.sh images
	hack/build-images.sh llamafactory vllm-cpu pause >/dev/null

browser: venv ## Headless Chromium (Debian) for the node tier's LlamaBoard check
	hack/install-debs.sh browser

# Set-up in two lanes: the image archives in one, everything else in the other. Building an image is mostly one
# core's work (pip unpacking wheels inside the build, then writing the archive) and takes the longest, while
# the Go builds and the venv keep both cores busy: one after the other, a core sat idle through the images.
# Measured from empty caches: make demo in 23 minutes, about 80 one step after the other (docs/testing.md).
# Two sub-makes, not make -j2, which picks the order of its jobs itself (it started the images last). Each
# step's lines keep their own prefix ([build-images], [build-tools], ...). The pause binary comes first: both
# lanes need it. The + runs the sub-makes under make -n too (they inherit the -n), as a plain $(MAKE) line would.
# Where the disk cannot hold both lanes' peaks at once (hack/disk-check.py lanes), or LFK_ONE_LANE=1 asks, the
# images build after the rest, once Go's caches are gone.
define set_up
	+@lanes=$$($(PYTHON) hack/disk-check.py lanes $(1)) || exit 1; \
	if [ "$$lanes" = 1 ]; then \
	  $(MAKE) --no-print-directory $(2) && $(MAKE) --no-print-directory image-archives; exit; \
	fi; \
	$(MAKE) --no-print-directory image-archives & images=$$!; \
	$(MAKE) --no-print-directory $(2); rest=$$?; \
	[ $$rest -eq 0 ] || echo "make: a set-up step failed (its output is above); the image archives still build, then make stops" >&2; \
	wait $$images; archives=$$?; \
	[ $$archives -eq 0 ] || echo "make: building the image archives failed (their output is above)" >&2; \
	[ $$rest -eq 0 ] && [ $$archives -eq 0 ]
endef
setup-demo: $(PAUSE)
	$(call set_up,demo $(DEMO_TOOLS) $(NODE_TOOLS),demo-specs $(KUBE_BUILDS) $(DEMO_TOOLS) node-tools drop-go-caches)
setup-test: $(PAUSE)
	$(call set_up,test $(TEST_TOOLS),venv llamafactory $(KUBE_BUILDS) tools cluster-tools node-tools browser drop-go-caches)
# The disk's peak is Go's caches beside an image being built. hack/build-tools.sh keeps one family of tools in
# Go's caches at a time (Kubernetes' commands for the control plane and the node, which share most of their
# packages, build first), and both caches go once the tools are built: every tool is kept under .tools.
# Measured from empty caches (docs/testing.md). LFK_KEEP_GO_CACHES=1 keeps them.
KUBE_BUILDS := $(TOOLS)/kube-$(KUBE_VERSION)/kubectl $(TOOLS)/kube-node-$(KUBE_VERSION)/.complete
drop-go-caches:
	hack/build-tools.sh drop-go-caches
# the demo's first step needs no images and no cluster: it shows while they build. The demo needs no
# LLaMA-Factory in .venv (6.6 GB with torch): the tiny model is made in a pod of the image (make test installs it)
demo-specs: venv
	$(PY) hack/demo.py specs

$(HELM3):
	hack/build-tools.sh helm3
$(HELM4):
	hack/build-tools.sh helm4
$(HELM_UNITTEST):
	hack/build-tools.sh helm-unittest
$(HELM_DOCS):
	hack/build-tools.sh helm-docs
$(TOOLS)/kube-$(KUBE_VERSION)/kubectl:
	hack/build-tools.sh kube
$(TOOLS)/etcd-$(ETCD_VERSION)/.complete:
	hack/build-tools.sh etcd
$(TOOLS)/kwok-$(KWOK_VERSION)/.complete:
	hack/build-tools.sh kwok
$(CRDS)/.complete:
	hack/build-tools.sh crds
$(GITOPS_CRDS)/.complete:
	hack/build-tools.sh gitops-crds
$(HELMFILE):
	hack/build-tools.sh helmfile
$(JOBSET):
	hack/build-tools.sh jobset
$(TRAINER): hack/trainer-controller/main.go hack/controller-serving/serving.go
	hack/build-tools.sh trainer
$(TRAINING_OPERATOR): hack/training-operator/main.go hack/controller-serving/serving.go
	hack/build-tools.sh training-operator
$(KUBERAY):
	hack/build-tools.sh kuberay
$(KUEUE):
	hack/build-tools.sh kueue
$(TOOLS)/containerd-$(CONTAINERD_VERSION)/.complete:
	hack/build-tools.sh containerd
$(TOOLS)/kube-node-$(KUBE_VERSION)/.complete:
	hack/build-tools.sh kube-node
$(TOOLS)/coredns-$(COREDNS_VERSION)/.complete:
	hack/build-tools.sh coredns
$(TOOLS)/pause-$(KUBE_VERSION)/.complete:
	hack/build-tools.sh pause

# ------------------------------------------------------------------------------------------ generator
.PHONY: validate render check-values
validate: venv ## Validate every experiment spec in values/
	$(LFK) validate $(SPECS)

render: venv ## Render the Helm values of every experiment in values/
	$(LFK) render $(SPECS)

check-values: venv ## Fail with a diff when committed values are stale
	$(LFK) render --check $(SPECS)

# ----------------------------------------------------------------------------------------------- chart
# helm-docs fills README.md.gotmpl's parameter table from values.yaml's `# --` comments, in file order. It reports
# a broken template or values file as a warning and exits 0, so any line it prints fails the target.
HELM_DOCS_ARGS := --chart-search-root charts/llama-factory --sort-values-order file --log-level warning
.PHONY: chart-docs
chart-docs: $(HELM_DOCS) ## Regenerate the chart README (its parameter table from values.yaml) with helm-docs
	@out=$$($(HELM_DOCS) $(HELM_DOCS_ARGS) 2>&1); if [ -n "$$out" ]; then echo "$$out" >&2; exit 1; fi

.PHONY: chart-schema
chart-schema: venv ## Regenerate the chart's values.schema.json from values.yaml and its annotations
	$(PY) hack/chart-schema.py

CHART_VERSION = $(shell awk '$$1 == "version:" {print $$2}' charts/llama-factory/Chart.yaml)
.PHONY: chart-package
chart-package: $(HELM3) ## Lint strictly, then package the chart into dist/llama-factory-<version>.tgz (push: see the chart README)
	$(HELM3) lint --strict charts/llama-factory
	@mkdir -p dist
	$(HELM3) package charts/llama-factory --destination dist
	@echo "push it to an OCI registry (after: helm registry login REGISTRY):"
	@echo "  helm push dist/llama-factory-$(CHART_VERSION).tgz oci://REGISTRY/PATH"
	@echo "install from there: helm upgrade --install RELEASE oci://REGISTRY/PATH/llama-factory --version $(CHART_VERSION) -f VALUES"

# ---------------------------------------------------------------------------------------------- checks
.PHONY: lint
PY_SOURCES := generator tests hack charts/llama-factory/files
lint: venv ## ruff, mypy and shellcheck over the generator, tests, hack/ and the scripts the chart's pods run
	hack/install-debs.sh lint
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy charts/llama-factory/files/*.py
	shellcheck -x charts/llama-factory/files/*.sh hack/*.sh

# ----------------------------------------------------------------------------------------------- tests
.PHONY: test test-unit test-chart test-cluster test-node test-llamafactory smoke gpu-smoke
# The node tier owns the real node and sets the pace: it starts first, in the background, while the unit
# tier runs (two pytest-xdist workers), so a broken unit test still fails the run in a minute; then the
# chart tier (two workers), the cluster tier (three, mostly waiting on their API servers) and the
# LLaMA-Factory tier (CPU training, at a lower priority) one after the other beside it, in the CPU its pods
# leave idle (hack/test-tiers.sh). Each slow tier lists its slowest tests.
test: disk-check-test setup-test ## Run every test tier (sets up everything first)
	$(LFK) render --check $(SPECS)
	hack/test-tiers.sh $(PYTEST) $(PYTEST_ARGS)

test-unit: venv ## Unit tier: generator core, schema, golden cases, CLI
	$(PYTEST) -m unit $(PYTEST_ARGS)

test-chart: venv tools ## Chart tier: helm lint/template (Helm 3 and 4), helm-unittest, schema
	$(PYTEST) -m chart $(PYTEST_ARGS)

test-cluster: venv tools cluster-tools ## Cluster tier: every example on a real kube-apiserver with kwok GPU nodes
	$(PYTEST) -m cluster $(PYTEST_ARGS)

test-node: venv llamafactory tools cluster-tools images browser ## Node tier: the tiny experiment in real pods on the local cluster's real node
	$(PYTEST) -m node $(PYTEST_ARGS)

test-llamafactory: venv llamafactory ## LLaMA-Factory tier: real train -> resume -> merge -> load on CPU
	$(PYTEST) -m llamafactory $(PYTEST_ARGS)

smoke: venv llamafactory ## Real LLaMA-Factory on CPU: tiny model, train (preempted), resume, merge, load; timed
	$(PY) -m tests.support.smoke

GPUS_SMOKE ?= 1
gpu-smoke: venv llamafactory ## On a GPU machine: the rendered config under torchrun on GPUS_SMOKE=N GPUs (default 1; not part of make test)
	$(PY) -m tests.support.smoke --gpus $(GPUS_SMOKE)

GPU_BENCH_ARGS ?=
.PHONY: gpu-bench
gpu-bench: venv llamafactory ## On a GPU machine: the guide's config vs ours on a Llama-3.1-8B shape: tokens/s, MFU, peak VRAM vs estimate (--tiny: CPU rehearsal)
	$(PY) hack/gpu-bench.py $(GPU_BENCH_ARGS)

# ----------------------------------------------------------------------------------------- operations
.PHONY: install uninstall
install: venv tools ## helm upgrade --install: make install EXP=<name> COMPONENT=<webui|train|merge|eval|vllm|all>
	@test -n "$(EXP)" || { echo "usage: make install EXP=<name> [COMPONENT=webui|train|merge|eval|vllm|all]"; exit 2; }
	$(LFK) install values/$(EXP)/experiment.yaml --component $(COMPONENT)

STORAGE_ROOT ?=
# all: every release the spec enables, in lfk run's own order (train, merge, eval, vllm, webui)
RUN_COMPONENTS := $(if $(filter all,$(COMPONENT)),,--components $(COMPONENT))
.PHONY: run status check ui
run: venv tools ## Install and wait train -> merge -> eval (the gate) -> vllm (+ helm test) -> webui: make run EXP=<name> [COMPONENT=...]
	@test -n "$(EXP)" || { echo "usage: make run EXP=<name> [COMPONENT=train|merge|eval|vllm|webui|all]"; exit 2; }
	$(LFK) run values/$(EXP)/experiment.yaml $(RUN_COMPONENTS) $(if $(STORAGE_ROOT),--storage-root $(STORAGE_ROOT))

status: venv tools ## Releases, Jobs, pods, GPUs and training progress: make status EXP=<name> [STORAGE_ROOT=/mnt/llm]
	@test -n "$(EXP)" || { echo "usage: make status EXP=<name>"; exit 2; }
	$(LFK) status values/$(EXP)/experiment.yaml $(if $(STORAGE_ROOT),--storage-root $(STORAGE_ROOT))

check: venv tools ## The before-training checklist: make check EXP=<name> [STORAGE_ROOT=/mnt/llm]
	@test -n "$(EXP)" || { echo "usage: make check EXP=<name> [STORAGE_ROOT=...]"; exit 2; }
	$(LFK) check values/$(EXP)/experiment.yaml $(if $(STORAGE_ROOT),--storage-root $(STORAGE_ROOT),--in-cluster)

ui: venv tools ## Port-forward and print the URL: make ui EXP=<name> COMPONENT=webui|vllm|mlflow
	@test -n "$(EXP)" -a "$(COMPONENT)" != all || { echo "usage: make ui EXP=<name> COMPONENT=webui|vllm|mlflow"; exit 2; }
	$(LFK) ui values/$(EXP)/experiment.yaml $(COMPONENT)

uninstall: venv tools ## helm uninstall (storage is kept): make uninstall EXP=<name> COMPONENT=<...|all>
	@test -n "$(EXP)" || { echo "usage: make uninstall EXP=<name> [COMPONENT=webui|train|merge|eval|vllm|all]"; exit 2; }
	$(LFK) uninstall values/$(EXP)/experiment.yaml --component $(COMPONENT)

# ------------------------------------------------------------------------------------------ local cluster
NODES ?= 4
GPUS ?= 8
ENGINES ?=
SCHEDULING ?= spread
.PHONY: cluster-up cluster-down cluster-status
cluster-up: venv cluster-tools images ## Start the local cluster: control plane, simulated GPU nodes (NODES=4 GPUS=8), the real node (ENGINES="jobset trainer training-operator kuberay kueue": those controllers too; SCHEDULING=binpack packs GPUs)
	$(LFK) cluster up --nodes $(NODES) --gpus $(GPUS) --scheduling $(SCHEDULING) $(foreach e,$(ENGINES),--engines $(e))

cluster-down: venv ## Stop the local control plane (by PID) and delete its state
	$(LFK) cluster down

cluster-status: venv ## Show the local control plane's processes, health and nodes
	$(LFK) cluster status

# ------------------------------------------------------------------------------------------ demo, bench
.PHONY: demo bench bench-cluster bench-node
demo: disk-check-demo setup-demo ## The guide's flow for real: tiny-cpu trained, merged, evaluated, served on the real node; the GPU example on simulated nodes
	$(PY) hack/demo.py cluster

bench: venv $(HELM3) ## Benchmark: lfk validate, lfk render (all examples) and one helm template side by side; 1000 specs in one process
	$(PY) hack/bench-generator.py

BENCH_CLUSTER_ARGS ?=
bench-cluster: venv tools cluster-tools ## Scale benchmark: 100 fake nodes x 8 GPUs, 200 training releases through Kueue, default vs packing scheduler side by side (BENCH_CLUSTER_ARGS="--rounds 2 --memory": memory left behind)
	$(PY) -u hack/bench-cluster.py $(BENCH_CLUSTER_ARGS)

bench-node: venv tools cluster-tools images ## Real node: cluster up to a Ready node, the tiny experiment step by step (preempted, resumed, served)
	$(PY) hack/bench-node.py

.PHONY: clean
clean: ## Remove caches (keeps .venv and .tools)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
