#!/usr/bin/env bash
# Builds the project's tools from the Go module proxy, each pinned (hack/versions.env) and cached by version
# under $TOOLS_DIR/<name>-<version>/, so a second run rebuilds nothing.
#
#   hack/build-tools.sh drop-go-caches   removes Go's caches of this script (LFK_KEEP_GO_CACHES=1: keeps them)
#   hack/build-tools.sh TOOL...     TOOL: helm3 helm4 helm-unittest helm-docs helmfile etcd kwok kube crds gitops-crds jobset kueue trainer
#                                         training-operator kuberay
#                                         containerd kube-node coredns pause (the real node)
#
# Kubernetes cannot be `go install`ed (its go.mod replaces every staging module with ./staging/...),
# so it is built from a small wrapper module that points each staging module at its published version.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
. "$here/versions.env"
TOOLS_DIR=${TOOLS_DIR:-$(cd "$here/.." && pwd)/.tools}
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
# Go's build and module caches of our own, beside the images' cache: the set-up can drop them once its tools are
# built (make demo does, with drop-go-caches) and the caches of your own Go work stay as they are
GO_CACHES=${LFK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llamafactory-k8s}/go
export GOCACHE=$GO_CACHES/build GOMODCACHE=$GO_CACHES/mod

log() { printf '[build-tools] %s\n' "$*" >&2; }

# scratch modules, removed when the script ends however it ends
scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT
new_scratch() { local d; d=$(mktemp -d); scratch+=("$d"); work=$d; }

# done_marker DIR: the binaries in DIR are complete (written last, so an interrupted build is redone)
done_marker() { printf '%s/.complete' "$1"; }

# mod_dir MODULE@VERSION: download the module and print its source folder in the module cache
mod_dir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

# scratch_build OUT BINARY MODULE@VERSION PACKAGE: PACKAGE built as OUT.tmp/BINARY in the scratch module $work
# (new_scratch), which requires MODULE and may hold a main.go of ours (PACKAGE ".")
scratch_build() {
  local out=$1 binary=$2 module=$3 package=$4
  mkdir -p "$out.tmp"
  (
    cd "$work"
    printf 'module localbuild/%s\ngo 1.26.0\n' "$binary" >go.mod
    go get "$module" >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/$binary" "$package"
  )
}

# kube_module: make $work a wrapper module that requires k8s.io/kubernetes $KUBE_VERSION and replaces every
# staging module k8s.io/<m> (which its go.mod points at ./staging/...) with its published twin v0.<minor>.<patch>
kube_module() {
  local src; src=$(mod_dir "k8s.io/kubernetes@$KUBE_VERSION")
  {
    echo "module localbuild/kube"
    grep -E '^go ' "$src/go.mod"
    grep -E '^godebug ' "$src/go.mod" || true
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$src/go.mod" |
      awk -v v="v0.${KUBE_VERSION#v*.}" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  (cd "$work" && go get "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null)
}

# kube_stamp: the -ldflags -X that make `--version` and the apiserver's /version real (Helm's KubeVersion reads it)
kube_stamp() {
  local major minor pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
  major=${KUBE_VERSION#v}; major=${major%%.*}
  minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  printf '%s' "-X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor" \
    " -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" \
    " -X $cgo.gitVersion=$KUBE_VERSION -X $cgo.gitMajor=$major -X $cgo.gitMinor=$minor"
}

# build_kube_commands NAME COLD_TIME COMMAND...: k8s.io/kubernetes/cmd/COMMAND... into $TOOLS_DIR/NAME-$KUBE_VERSION
build_kube_commands() {
  local name=$1 cold=$2; shift 2
  local out="$TOOLS_DIR/$name-$KUBE_VERSION" have=1 c
  for c in "$@"; do [ -x "$out/$c" ] || have=0; done
  [ -f "$(done_marker "$out")" ] && [ "$have" = 1 ] && { log "$name $KUBE_VERSION cached in $out"; return; }
  local work; new_scratch
  log "building $* $KUBE_VERSION (cold: about $cold on 2 cores)"
  kube_module
  local stamp; stamp=$(kube_stamp)
  mkdir -p "$out.tmp"
  # one go build for all commands, so their shared packages compile once
  (cd "$work" && go build -trimpath -ldflags "-s -w $stamp" -o "$out.tmp/" "${@/#/k8s.io/kubernetes/cmd/}")
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# the local control plane (kwok stands in for most kubelets) and the real node's kubelet and kube-proxy
build_kube() { build_kube_commands kube 'ten minutes' kube-apiserver kube-controller-manager kube-scheduler kubectl; }
build_kube-node() { build_kube_commands kube-node 'eight minutes, three after kube' kubelet kube-proxy; }

build_etcd() {
  local out="$TOOLS_DIR/etcd-$ETCD_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "etcd $ETCD_VERSION cached in $out"; return; }
  local work; new_scratch
  log "building etcd $ETCD_VERSION"
  (
    cd "$work"
    printf 'module localbuild/etcd\ngo 1.24\n' >go.mod
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

build_kwok() {
  local out="$TOOLS_DIR/kwok-$KWOK_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "kwok $KWOK_VERSION cached in $out"; return; }
  log "building kwok $KWOK_VERSION"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# build_helm MAJOR VERSION: helm with its real version stamped (`helm version`, .Capabilities.HelmVersion)
build_helm() {
  local major=$1 version=$2
  local out="$TOOLS_DIR/helm-$version"
  [ -f "$(done_marker "$out")" ] && { log "helm $version cached in $out"; return; }
  local work; new_scratch
  log "building helm $version"
  local ldflags="-s -w -X helm.sh/helm/v$major/internal/version.version=$version -X helm.sh/helm/v$major/internal/version.gitTreeState=clean"
  (
    cd "$work"
    printf 'module localbuild/helm\ngo 1.26.0\n' >go.mod
    go get "helm.sh/helm/v$major@$version" >/dev/null
    if [ "$major" = 3 ]; then
      # helm 3 assumes this Kubernetes version offline (helm template, lint): the one of its client-go
      local cg; cg=$(go list -m -f '{{.Version}}' k8s.io/client-go)
      cg=${cg#v0.}; cg=${cg%%.*}
      ldflags="$ldflags -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$cg"
      ldflags="$ldflags -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$cg"
    fi
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp/helm" "helm.sh/helm/v$major/cmd/helm"
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}
build_helm3() { build_helm 3 "$HELM3_VERSION"; }
build_helm4() { build_helm 4 "$HELM4_VERSION"; }

build_helm-unittest() {
  local out="$TOOLS_DIR/helm-unittest-$HELM_UNITTEST_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "helm-unittest $HELM_UNITTEST_VERSION cached in $out"; return; }
  local work; new_scratch
  log "building helm-unittest $HELM_UNITTEST_VERSION"
  local src; src=$(mod_dir "github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION")
  (
    cd "$work"
    # its go.mod carries replace directives, which only apply in the main module: repeat them here
    { echo "module localbuild/helm-unittest"; grep -E '^go ' "$src/go.mod"
      echo "require github.com/helm-unittest/helm-unittest $HELM_UNITTEST_VERSION"
      grep -E '^replace ' "$src/go.mod" || true; } >go.mod
    go get "github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION" >/dev/null
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/helm-unittest" github.com/helm-unittest/helm-unittest/cmd/helm-unittest
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# helm-docs, which writes the chart README's parameter table (make chart-docs), with its version stamped as its
# release build does (`helm-docs --version`). Its go.mod has no replace directive, so `go install` builds it.
build_helm-docs() {
  local out="$TOOLS_DIR/helm-docs-$HELM_DOCS_VERSION"
  [ -f "$(done_marker "$out")" ] && [ -x "$out/helm-docs" ] && { log "helm-docs $HELM_DOCS_VERSION cached in $out"; return; }
  log "building helm-docs $HELM_DOCS_VERSION"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X main.version=${HELM_DOCS_VERSION#v}" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# containerd, its runc shim and ctr for the real node; runc itself and the CNI plugins come from Debian
# (hack/install-debs.sh node). Its go.mod has no replace directive; the wrapper module only pins it.
CONTAINERD_COMMANDS=(containerd containerd-shim-runc-v2 ctr)

build_containerd() {
  local out="$TOOLS_DIR/containerd-$CONTAINERD_VERSION" have=1 c
  for c in "${CONTAINERD_COMMANDS[@]}"; do [ -x "$out/$c" ] || have=0; done
  [ -f "$(done_marker "$out")" ] && [ "$have" = 1 ] && { log "containerd $CONTAINERD_VERSION cached in $out"; return; }
  local work; new_scratch
  log "building ${CONTAINERD_COMMANDS[*]} $CONTAINERD_VERSION (cold: about five minutes on 2 cores)"
  # what containerd's Makefile stamps (`containerd --version`, the CRI runtime version); no git, so no revision
  local pkg=github.com/containerd/containerd/v2
  local stamp="-X $pkg/version.Version=$CONTAINERD_VERSION"
  (
    cd "$work"
    printf 'module localbuild/containerd\ngo 1.26.0\n' >go.mod
    go get "$pkg@$CONTAINERD_VERSION" >/dev/null
    mkdir -p "$out.tmp"
    # CGO_ENABLED=0 leaves out the btrfs snapshotter (cgo only); overlayfs, native and the CRI plugin stay.
    # urfave_cli_no_docs as in its Makefile (drops the man page generator)
    go build -trimpath -tags urfave_cli_no_docs -ldflags "-s -w $stamp" -o "$out.tmp/" "${CONTAINERD_COMMANDS[@]/#/$pkg/cmd/}"
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# CoreDNS, the cluster DNS of the real node, with only the plugins its Corefile names
# coredns_main: a CoreDNS main with the plugins COREDNS_PLUGINS names, in that order
COREDNS_PLUGINS=(bind ready health errors kubernetes)
coredns_main() {
  printf 'package main\n\nimport (\n'
  printf '\t"github.com/coredns/coredns/core/dnsserver"\n\t"github.com/coredns/coredns/coremain"\n'
  printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "${COREDNS_PLUGINS[@]}"
  printf ')\n\nfunc init() {\n\tdnsserver.Directives = []string{'
  printf '"%s", ' "${COREDNS_PLUGINS[@]}"
  printf '}\n}\n\nfunc main() { coremain.Run() }\n'
}

build_coredns() {
  local out="$TOOLS_DIR/coredns-$COREDNS_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "coredns $COREDNS_VERSION cached in $out"; return; }
  local work; new_scratch
  log "building coredns $COREDNS_VERSION"
  # only the plugins the real node's Corefile names (generator/cluster/realnode.py corefile()), in the
  # order of CoreDNS's core/dnsserver/zdirectives.go: its own main compiles every plugin, the cloud
  # providers' SDKs among them, for a server that uses five. Its version is a constant; the Makefile stamps
  # only the git commit, which a module has not.
  coredns_main >"$work/main.go"
  scratch_build "$out" coredns "github.com/coredns/coredns@$COREDNS_VERSION" .
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# The sandbox (pause) binary of the real node's pods: no registry to pull registry.k8s.io/pause from, so it
# is built the way its Makefile does (static, gcc -Os) from the pause.c in the k8s.io/kubernetes module
build_pause() {
  local out="$TOOLS_DIR/pause-$KUBE_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "pause $KUBE_VERSION cached in $out"; return; }
  log "building pause from k8s.io/kubernetes $KUBE_VERSION"
  local src tag; src=$(mod_dir "k8s.io/kubernetes@$KUBE_VERSION")/build/pause
  # `pause -v` prints v<TAG>-<REV> like the published image: TAG from its Makefile, REV the Kubernetes tag
  tag=$(sed -nE 's/^TAG \?= *([0-9.]+) *$/\1/p' "$src/Makefile")
  [ -n "$tag" ] || { echo "no TAG in $src/Makefile" >&2; exit 1; }
  mkdir -p "$out.tmp"
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-$KUBE_VERSION" -o "$out.tmp/pause" "$src/linux/pause.c"
  strip "$out.tmp/pause"  # the Makefile does not strip; 0.7 MB instead of 0.8
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# controller_files MODULE_DIR OUT [CRD_DIR WEBHOOKS CRD_GLOB]: a kubebuilder controller's CRDs and webhook
# manifests (where kubebuilder puts them unless given; WEBHOOKS "": it has none) beside its binary in OUT.tmp,
# then OUT.tmp in place (generator/cluster/engines.py applies them)
controller_files() {
  local src=$1 out=$2 crds=${3:-config/components/crd/bases} hooks=${4-config/components/webhook/manifests.yaml}
  local glob=${5:-*_*.yaml}
  mkdir -p "$out.tmp/crds"
  # shellcheck disable=SC2086 # the glob is meant to expand
  cp "$src/$crds"/$glob "$out.tmp/crds/"
  [ -z "$hooks" ] || cp "$src/$hooks" "$out.tmp/webhooks.yaml"
  chmod -R u+w "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# JobSet's controller with its CRD and webhook manifests, from its module: its root package is the command,
# and the proxy refuses the module's version list that `go install pkg@version` asks for, so it is built in a
# scratch module that requires it
build_jobset() {
  local out="$TOOLS_DIR/jobset-$JOBSET_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "jobset $JOBSET_VERSION cached in $out"; return; }
  log "building jobset $JOBSET_VERSION (cold: about five minutes on 2 cores)"
  local src; src=$(mod_dir "sigs.k8s.io/jobset@$JOBSET_VERSION")
  local work; new_scratch
  scratch_build "$out" jobset "sigs.k8s.io/jobset@$JOBSET_VERSION" sigs.k8s.io/jobset
  controller_files "$src" "$out"
}

# build_our_command NAME VERSION MODULE COMMAND_DIR CRD_GLOB: an upstream controller built from a command of
# ours (hack/COMMAND_DIR/main.go beside hack/controller-serving/serving.go: upstream's set-up with its webhook
# server on 127.0.0.1 and a certificate folder of ours) in a scratch module that requires MODULE@VERSION;
# beside it the CRDs matching CRD_GLOB and the webhook manifests from the module's manifests/base
build_our_command() {
  local name=$1 version=$2 module=$3 command=$4 glob=$5
  local out="$TOOLS_DIR/$name-$version" sources=("$here/$command/main.go" "$here/controller-serving/serving.go")
  # cached by version and by our sources: an edited command is built again
  local sum; sum=$(cat "${sources[@]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$(done_marker "$out")" ] && [ "$(cat "$out/.source" 2>/dev/null)" = "$sum" ]; then
    touch "$(done_marker "$out")"  # newer than the sources, for make
    log "$name $version cached in $out"
    return
  fi
  log "building $name $version (cold: a few minutes on 2 cores)"
  local src; src=$(mod_dir "$module@$version")
  local work; new_scratch
  cp "${sources[@]}" "$work/"
  scratch_build "$out" "$name" "$module@$version" .
  printf '%s\n' "$sum" >"$out.tmp/.source"
  controller_files "$src" "$out" manifests/base/crds manifests/base/webhook/manifests.yaml "$glob"
}

# Kubeflow Trainer's controller manager with its CRDs (TrainJob and the training runtimes)
build_trainer() {
  build_our_command trainer "$KUBEFLOW_TRAINER_VERSION" github.com/kubeflow/trainer/v2 trainer-controller '*_*.yaml'
}

# The Kubeflow training operator's manager, PyTorchJobs only, with the PyTorchJob CRD
build_training-operator() {
  build_our_command training-operator "$KUBEFLOW_TRAINING_OPERATOR_VERSION" github.com/kubeflow/training-operator \
    training-operator kubeflow.org_pytorchjobs.yaml
}

# KubeRay's operator (RayCluster, RayJob, RayService controllers) with its CRDs, from the ray-operator module:
# its root package is the command, built in a scratch module that requires it (as JobSet). Its webhooks are off
# unless ENABLE_WEBHOOKS=true, so it brings no webhook manifest
build_kuberay() {
  local out="$TOOLS_DIR/kuberay-$KUBERAY_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "kuberay $KUBERAY_VERSION cached in $out"; return; }
  log "building kuberay $KUBERAY_VERSION (cold: a few minutes on 2 cores)"
  local module=github.com/ray-project/kuberay/ray-operator
  local src; src=$(mod_dir "$module@$KUBERAY_VERSION")
  local work; new_scratch
  scratch_build "$out" kuberay "$module@$KUBERAY_VERSION" "$module"
  controller_files "$src" "$out" config/crd/bases "" 'ray.io_*.yaml'
}

# Kueue's controller with its CRDs and webhook manifests, all from its Go module (generator/cluster/engines.py
# starts it against the local API server and registers the webhooks on 127.0.0.1)
build_kueue() {
  local out="$TOOLS_DIR/kueue-$KUEUE_VERSION"
  [ -f "$(done_marker "$out")" ] && { log "kueue $KUEUE_VERSION cached in $out"; return; }
  log "building kueue $KUEUE_VERSION (cold: about six minutes on 2 cores)"
  local src; src=$(mod_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  controller_files "$src" "$out"
}

# The CRDs of the training operators (Kubeflow Trainer v2, the Kubeflow training operator, JobSet, KubeRay),
# copied out of the operators' own Go modules at pinned versions; the cluster tier installs them.
build_crds() {
  local id="trainer-$KUBEFLOW_TRAINER_VERSION-pytorch-$KUBEFLOW_TRAINING_OPERATOR_VERSION-jobset-$JOBSET_VERSION-kuberay-$KUBERAY_VERSION"
  local out="$TOOLS_DIR/crds-$id"
  [ -f "$(done_marker "$out")" ] && { log "operator CRDs cached in $out"; return; }
  mkdir -p "$out.tmp"
  local module path dir
  for module in \
    "github.com/kubeflow/trainer/v2@$KUBEFLOW_TRAINER_VERSION:manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml" \
    "github.com/kubeflow/training-operator@$KUBEFLOW_TRAINING_OPERATOR_VERSION:manifests/base/crds/kubeflow.org_pytorchjobs.yaml" \
    "sigs.k8s.io/jobset@$JOBSET_VERSION:config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" \
    "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION:config/crd/bases/ray.io_rayjobs.yaml"; do
    path=${module#*:}; module=${module%%:*}
    dir=$(mod_dir "$module")
    cp "$dir/$path" "$out.tmp/"
  done
  chmod u+w "$out.tmp"/*
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# The CRDs of the GitOps tools that can deploy the chart: Argo CD's Application, AppProject and ApplicationSet
# and Flux's GitRepository, OCIRepository and HelmRepository, copied out of their Go modules. Flux's HelmRelease
# CRD is not in a module the proxy serves (helm-controller's root module is refused), so it is generated the
# way upstream generates it: controller-gen over the Go types of its API module (github.com/fluxcd/helm-controller/api).
gitops_crds_id() {
  printf 'argocd-%s-source-controller-%s-helm-controller-api-%s-controller-gen-%s' "$ARGOCD_VERSION" \
    "$FLUX_SOURCE_CONTROLLER_VERSION" "$FLUX_HELM_CONTROLLER_API_VERSION" "$CONTROLLER_TOOLS_VERSION"
}
build_gitops-crds() {
  local out; out="$TOOLS_DIR/gitops-crds-$(gitops_crds_id)"
  [ -f "$(done_marker "$out")" ] && { log "GitOps CRDs cached in $out"; return; }
  local work; new_scratch
  log "fetching the Argo CD and Flux CRDs; generating HelmRelease (cold: about two minutes on 2 cores)"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  local module path dir
  for module in \
    "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION:manifests/crds/application-crd.yaml" \
    "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION:manifests/crds/appproject-crd.yaml" \
    "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION:manifests/crds/applicationset-crd.yaml" \
    "github.com/fluxcd/source-controller@$FLUX_SOURCE_CONTROLLER_VERSION:config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml" \
    "github.com/fluxcd/source-controller@$FLUX_SOURCE_CONTROLLER_VERSION:config/crd/bases/source.toolkit.fluxcd.io_ocirepositories.yaml" \
    "github.com/fluxcd/source-controller@$FLUX_SOURCE_CONTROLLER_VERSION:config/crd/bases/source.toolkit.fluxcd.io_helmrepositories.yaml"; do
    path=${module#*:}; module=${module%%:*}
    dir=$(mod_dir "$module")
    cp "$dir/$path" "$out.tmp/"
  done
  (
    cd "$work"
    # one module that requires both, so controller-gen (built and run here, then thrown away with $work)
    # loads the API packages; paths and options as in helm-controller's `make manifests`
    printf 'module localbuild/gitops-crds\ngo 1.26.0\n' >go.mod
    go get "sigs.k8s.io/controller-tools@$CONTROLLER_TOOLS_VERSION" \
      "github.com/fluxcd/helm-controller/api@$FLUX_HELM_CONTROLLER_API_VERSION" >/dev/null
    go build -trimpath -ldflags "-s -w" -o controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
    ./controller-gen crd:crdVersions=v1 paths=github.com/fluxcd/helm-controller/api/... output:crd:dir=crd
    [ -f crd/helm.toolkit.fluxcd.io_helmreleases.yaml ] || { echo "controller-gen made no HelmRelease CRD" >&2; exit 1; }
    cp crd/helm.toolkit.fluxcd.io_helmreleases.yaml "$out.tmp/"
  )
  chmod u+w "$out.tmp"/*
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# helmfile, with its real version stamped (`helmfile --version`; the version variables its release build sets)
build_helmfile() {
  local out="$TOOLS_DIR/helmfile-$HELMFILE_VERSION"
  [ -f "$(done_marker "$out")" ] && [ -x "$out/helmfile" ] && { log "helmfile $HELMFILE_VERSION cached in $out"; return; }
  local work; new_scratch
  log "building helmfile $HELMFILE_VERSION (cold: about six minutes on 2 cores)"
  local src; src=$(mod_dir "github.com/helmfile/helmfile@$HELMFILE_VERSION")
  local pkg=go.szostok.io/version
  local stamp="-X $pkg.version=${HELMFILE_VERSION#v} -X $pkg.buildDate=1970-01-01T00:00:00Z -X $pkg.dirtyBuild=false"
  (
    cd "$work"
    # its go.mod replaces k8s.io/api, apimachinery and client-go (a replace block), which only applies in
    # the main module: repeat every replace directive here, single-line or block
    { echo "module localbuild/helmfile"; grep -E '^go ' "$src/go.mod"
      echo "require github.com/helmfile/helmfile $HELMFILE_VERSION"
      awk '/^replace \(/, /^\)/ { print; next } /^replace / { print }' "$src/go.mod"; } >go.mod
    go get "github.com/helmfile/helmfile@$HELMFILE_VERSION" >/dev/null
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w $stamp" -o "$out.tmp/helmfile" github.com/helmfile/helmfile
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$(done_marker "$out")"
}

# go clean first: the module cache's files are read-only
empty_go_caches() { go clean -cache -modcache && rm -rf "$GO_CACHES"; }

# drop-go-caches: Go's caches go once the set-up's tools are built; every tool stays under .tools.
drop_go_caches() {
  [ -d "$GO_CACHES" ] || return 0
  local size; size=$(du -sh "$GO_CACHES" | cut -f1)
  if [ "${LFK_KEEP_GO_CACHES:-0}" = 1 ]; then
    log "Go's caches kept ($size in $GO_CACHES, LFK_KEEP_GO_CACHES=1)"
    return
  fi
  empty_go_caches
  log "Go's caches dropped ($size in $GO_CACHES): the tools built stay under .tools, a tool not built yet builds from empty caches (LFK_KEEP_GO_CACHES=1 keeps them)"
}

# family TOOL: tools that compile many of the same packages at the same versions, built one after the other
# (the Makefile's order): Kubernetes' commands (and the pause binary, whose source comes from the same module);
# helm and the tools built on its packages; the controllers (controller-runtime and Kubernetes' client
# libraries: controller-gen for the GitOps CRDs, JobSet, Kubeflow's two, KubeRay, Kueue). Every other tool is a
# family of its own.
family() {
  case $1 in
    kube | kube-node | pause) echo kubernetes ;;
    helm3 | helm4 | helm-unittest | helm-docs | helmfile) echo helm ;;
    gitops-crds | jobset | trainer | training-operator | kuberay | kueue) echo controllers ;;
    *) echo "$1" ;;
  esac
}

# Go's caches hold one family's modules and builds at a time: before a tool of another family builds, they are
# emptied. Kept, they added up to 21.5 GB after the 19 tools of make test, beside an image being built; one
# family's reach 7.6 GB (helm's; the controllers' 7.5, Kubernetes' 4.9). Emptied before every tool instead, the
# controllers and helmfile built 40-80 s slower each, the tools' lane 5 minutes: they share much. Measured
# from empty caches (docs/testing.md).
one_family_in_go_caches() {
  [ "${LFK_KEEP_GO_CACHES:-0}" = 1 ] && return 0
  local want mark=$GO_CACHES/.family
  want=$(family "$1")
  [ "$(cat "$mark" 2>/dev/null)" = "$want" ] && return 0
  if [ -d "$GO_CACHES" ]; then
    log "Go's caches emptied ($(du -sh "$GO_CACHES" | cut -f1) of $(cat "$mark" 2>/dev/null || echo 'no family')) before $1 builds"
    empty_go_caches
  fi
  mkdir -p "$GO_CACHES"
  printf '%s\n' "$want" >"$mark"
}

case "${1:-}:$#" in
  drop-go-caches:1) drop_go_caches; exit 0 ;;
esac

[ $# -gt 0 ] || { echo "usage: $0 TOOL... (helm3 helm4 helm-unittest helm-docs etcd kwok kube crds gitops-crds jobset kueue trainer training-operator kuberay helmfile containerd kube-node coredns pause)" >&2; exit 2; }
mkdir -p "$TOOLS_DIR"
for t in "$@"; do
  start=$(date +%s)
  one_family_in_go_caches "$t"
  "build_$t"
  log "$t ready in $(($(date +%s) - start)) s"
done
