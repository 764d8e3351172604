#!/usr/bin/env bash
# Installs the Debian packages a part of the project needs, only when they are missing, and says which.
#
#   hack/install-debs.sh GROUP...     GROUP: node images browser lint
#
# node:    what the real node of the local cluster runs on (runc, the CNI plugins, iptables for the kubelet
#          and kube-proxy, conntrack)
# images:  what builds the images the real node runs (debootstrap for the Debian base, buildah for the
#          Containerfiles, skopeo to inspect them)
# browser: headless Chromium, which the node tier drives to open LlamaBoard
# lint:    shellcheck for the chart's and hack/'s shell scripts (make lint)
set -euo pipefail

declare -A GROUPS_PKGS=(
  [node]="runc containernetworking-plugins iptables conntrack"
  [images]="debootstrap buildah skopeo"
  [browser]="chromium"
  [lint]="shellcheck"
)

log() { printf '[install-debs] %s\n' "$*" >&2; }

[ $# -gt 0 ] || { echo "usage: $0 GROUP... (${!GROUPS_PKGS[*]})" >&2; exit 2; }
find_missing() {
  missing=()
  local group pkg
  for group in "$@"; do
    [ -n "${GROUPS_PKGS[$group]:-}" ] || { echo "unknown group $group (${!GROUPS_PKGS[*]})" >&2; exit 2; }
    for pkg in ${GROUPS_PKGS[$group]}; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
  done
}
find_missing "$@"
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" = 0 ] || { echo "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2; exit 1; }
# make demo and make test build in two lanes, each of which may install a group: one apt-get at a time, and
# what the other lane installed meanwhile is not installed again
# (beside dpkg's own lock: a root-owned folder wherever apt-get is, where no other user can plant a link)
exec 8>/var/lib/dpkg/lfk-install-debs.lock
flock 8
find_missing "$@"
[ ${#missing[@]} -eq 0 ] && exit 0
log "installing ${missing[*]} with apt-get (missing on this machine)"
# the package lists of a fresh machine may be empty or old: refresh them once per run
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
