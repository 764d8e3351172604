#!/usr/bin/env bash
# Builds the images the real node runs, with no registry at all: a Debian bookworm base made with debootstrap
# and imported under the name the Containerfiles start FROM, then each images/<name>/Containerfile built with
# buildah and written as an OCI image archive (zstd-compressed layers) for `ctr -n k8s.io images import`.
# Each archive is named by a hash of everything that goes into it, so a second run rebuilds nothing.
#
#   hack/build-images.sh NAME...      NAME: llamafactory vllm-cpu pause, or all
#
# stdout, one line per image: NAME<TAB>ARCHIVE<TAB>IMAGE (progress goes to stderr). The newest archive of an
# image is also named in $LFK_CACHE_DIR/images/<name>.current. Environment:
#   LFK_CACHE_DIR   where the base, buildah's storage and the archives live (~/.cache/llamafactory-k8s)
#   DEBIAN_MIRROR   the mirror debootstrap fetches the base from (http://deb.debian.org/debian)
#   LFK_KEEP_BUILD_LAYERS=1   keep each image's layers in buildah's storage once its archive is written, so
#                   that a change to images/ rebuilds only the steps after it (about the image's size again
#                   on disk); by default they go, and only the Debian base stays
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=hack/versions.env
. "$here/versions.env"

CACHE=${LFK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llamafactory-k8s}
OUT_DIR=$CACHE/images
BASE_DIR=$CACHE/base
STORE=$CACHE/containers
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TOOLS_DIR=${TOOLS_DIR:-$root/.tools}

# the name the Containerfiles say in FROM: elsewhere it is Docker Hub's image, here the debootstrap base
BASE_REF=docker.io/library/debian:bookworm-slim
BASE_SUITE=bookworm
declare -A IMAGE_REFS=(
  [llamafactory]=lfk.local/llamafactory:0.9.5
  [vllm-cpu]=lfk.local/vllm-cpu:0.32.0
  [pause]=lfk.local/pause:3.10
)
ALL_IMAGES=(llamafactory vllm-cpu pause)
# how buildah builds: part of every image's hash (change it, and every image is rebuilt)
BUD_FLAGS=(--layers --pull=never --isolation=chroot --network=host --format=oci --identity-label=false)
# how the archive is written: skopeo (buildah 1.28's push picks its own compression), layers in zstd: the two
# archives take 6.1 GB instead of 13.3 uncompressed, written in about 40 s each on one core, and containerd
# unpacks them as quickly (it needs the layers' uncompressed digests only, which stay the same)
COPY_FLAGS=(--dest-compress --dest-compress-format zstd)
# archives written before the layers were compressed: one of these is compressed into the new archive instead
# of building the image again (the image is the same)
UNCOMPRESSED_COPY_FLAGS=(--dest-oci-accept-uncompressed-layers)

t0=$(date +%s)
elapsed() { local s=$(($(date +%s) - ${1:-$t0})); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
log() { printf '[build-images %s] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# with_heartbeat WHAT CMD...: runs CMD, saying every minute that WHAT is still going
with_heartbeat() {
  local what=$1 rc=0 hb start; start=$(date +%s); shift
  (
    n=0
    while sleep 10; do
      n=$((n + 1))
      [ $((n % 6)) -eq 0 ] && log "... $what ($(elapsed "$start") so far)"
    done
  ) &
  hb=$!
  "$@" || rc=$?
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  return "$rc"
}

# indented CMD...: CMD's output, indented, on stderr
indented() { "$@" 2>&1 | sed -u 's/^/  | /' >&2; }

bh() { buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay "$@"; }

sha_of_text() { sha256sum | cut -c1-64; }

# ------------------------------------------------------------------------------------------------ the base
# make_base_rootfs DIR: a minimal Debian like the official bookworm-slim image (minbase, no docs, no man
# pages, no apt lists, nothing of the build host's /etc)
make_base_rootfs() {
  local dir=$1
  debootstrap --variant=minbase --arch=amd64 "$BASE_SUITE" "$dir" "$DEBIAN_MIRROR"
  rm -f "$dir/etc/apt/sources.list"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $BASE_SUITE $BASE_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $BASE_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # what the slim image leaves out of every package installed later, and apt keeping no .deb files
  cat >"$dir/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'APT::Install-Recommends "false";\n' >"$dir/etc/apt/apt.conf.d/no-recommends"
  find "$dir/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  (cd "$dir" && rm -rf usr/share/{man,info,locale}/* var/lib/apt/lists/* var/cache/apt/* var/log/* \
    tmp/* var/tmp/* dev/* proc/* sys/* run/*)
  # the runtime provides these; nothing of this machine's network set-up goes into the image
  : >"$dir/etc/resolv.conf"
  printf 'localhost\n' >"$dir/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dir/etc/hosts"
  rm -f "$dir/etc/machine-id" && : >"$dir/etc/machine-id"
}

BASE_HASH=$( { echo "suite=$BASE_SUITE mirror=$DEBIAN_MIRROR ref=$BASE_REF"; declare -f make_base_rootfs; } | sha_of_text)
BASE_TAR=$BASE_DIR/debian-$BASE_SUITE-${BASE_HASH:0:16}.tar

ensure_base() {
  local start id
  if [ ! -f "$BASE_TAR" ]; then
    start=$(date +%s)
    command -v debootstrap >/dev/null || die "debootstrap is missing (hack/install-debs.sh images)"
    mkdir -p "$BASE_DIR"
    local dir="$BASE_DIR/rootfs.tmp"
    rm -rf "$dir"
    log "base: debootstrap --variant=minbase $BASE_SUITE from $DEBIAN_MIRROR (a few minutes)"
    with_heartbeat "debootstrap" indented make_base_rootfs "$dir"
    tar --numeric-owner --sort=name -C "$dir" -cf "$BASE_TAR.tmp" .
    rm -rf "$dir"
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    # an older base goes, from here and from buildah's storage (unless images still stand on it)
    local old
    for old in "$BASE_DIR"/debian-*.tar; do
      [ "$old" = "$BASE_TAR" ] && continue
      if [ -f "$old.id" ]; then bh rmi "$(cat "$old.id")" >/dev/null 2>&1 || true; fi
      rm -f "$old" "$old.id"
    done
    log "base: $BASE_TAR ($(du -m "$BASE_TAR" | cut -f1) MB) made in $(elapsed "$start")"
  fi
  # imported into buildah's storage once per base tarball; the image ID is kept beside it
  id=$(cat "$BASE_TAR.id" 2>/dev/null || true)
  if [ -n "$id" ] && bh inspect --type image "$id" >/dev/null 2>&1; then
    bh tag "$id" "$BASE_REF"
    return
  fi
  start=$(date +%s)
  log "base: importing $BASE_TAR as $BASE_REF"
  local ctr; ctr=$(bh from --pull=never scratch)
  bh add --quiet "$ctr" "$BASE_TAR" / >/dev/null
  # the config of Docker Hub's debian image: PATH and a bash command
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash \
    --os linux --arch amd64 "$ctr"
  id=$(bh commit --quiet --rm --format oci --identity-label=false "$ctr" "$BASE_REF")
  printf '%s\n' "$id" >"$BASE_TAR.id"
  log "base: imported in $(elapsed "$start")"
}

# ------------------------------------------------------------------------------------------------ the images
# prune_dangling: the intermediate layers no tagged image stands on (each pass frees one more level)
prune_dangling() {
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -n "$(bh images --quiet --filter dangling=true)" ] || break
    bh rmi --prune >/dev/null || break
  done
}

# the build context of an image: its folder, plus the pause binary for pause
context_of() {
  local name=$1 ctx
  if [ "$name" = pause ]; then
    local bin="$TOOLS_DIR/pause-$KUBE_VERSION/pause"
    if [ ! -x "$bin" ]; then
      log "pause: $bin is missing; building it (hack/build-tools.sh pause)"
      "$here/build-tools.sh" pause >&2
    fi
    ctx=$CACHE/context/pause
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp -p "$root/images/pause/"* "$ctx/"
    cp "$bin" "$ctx/pause"
    chmod 755 "$ctx/pause"
  else
    ctx=$root/images/$name
  fi
  printf '%s\n' "$ctx"
}

# hash_of NAME CONTEXT [COPY_FLAGS...]: everything that decides the archive: the image's files, its name, the
# build flags, how the archive is written (COPY_FLAGS unless given) and, for an image FROM the base, the base's recipe
hash_of() {
  local name=$1 ctx=$2 copy
  if [ $# -gt 2 ]; then copy="${*:3}"; else copy="${COPY_FLAGS[*]}"; fi
  {
    echo "ref=${IMAGE_REFS[$name]} bud=${BUD_FLAGS[*]} copy=$copy"
    grep -qE "^FROM +$BASE_REF" "$ctx/Containerfile" && echo "base=$BASE_HASH"
    (cd "$ctx" && find . -type f ! -name README.md ! -name DIFFERENCES.md -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum)
    (cd "$ctx" && find . -type f -perm -u+x | LC_ALL=C sort)
  } | sha_of_text
}

# prepare_run: once per run, before the first image is built or written: the Debian packages, the lock on the
# storage, and no working containers an interrupted run left behind
prepare_run() {
  [ -z "${prepared:-}" ] || return 0
  "$here/install-debs.sh" images
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build-images.lock"
  flock -n 9 || { log "waiting for another run of build-images to finish"; flock 9; }
  bh rm --all >/dev/null 2>&1 || true
  prepared=1
}

# write_archive NAME SOURCE OUT REF SIZE: skopeo copies SOURCE (an image of SIZE bytes, uncompressed) into the
# archive OUT; older archives of the image go (each is gigabytes)
write_archive() {
  local name=$1 source=$2 out=$3 ref=$4 size=$5 start need free
  start=$(date +%s)
  mkdir -p "$OUT_DIR" "$CACHE/tmp"
  rm -f "$out.tmp"
  # skopeo writes the image into a temporary OCI layout first, then into the archive: twice the compressed
  # size, which is at most the image's
  need=$((size + 1024 * 1024 * 1024))
  free=$(($(df --output=avail -k "$OUT_DIR" | tail -n1) * 1024))
  [ "$free" -ge "$need" ] || die "$name: writing its archive needs about $((need >> 30)) GiB free in $OUT_DIR, $((free >> 30)) GiB are"
  TMPDIR=$CACHE/tmp with_heartbeat "writing $name" indented skopeo copy --quiet "${COPY_FLAGS[@]}" \
    "$source" "oci-archive:$out.tmp:$ref"
  mv "$out.tmp" "$out"
  log "$name: $out ($(du -m "$out" | cut -f1) MB, zstd layers) written in $(elapsed "$start")"
  find "$OUT_DIR" -maxdepth 1 -name "$name-*.tar" ! -path "$out" -delete
}

build_image() {
  local name=$1 ref=${IMAGE_REFS[$1]} ctx hash out start old
  ctx=$(context_of "$name")
  hash=$(hash_of "$name" "$ctx")
  out=$OUT_DIR/$name-${hash:0:16}.tar
  old=$OUT_DIR/$name-$(hash_of "$name" "$ctx" "${UNCOMPRESSED_COPY_FLAGS[@]}" | cut -c1-16).tar
  if [ -f "$out" ]; then
    log "$name: cached ($out)"
  elif [ -f "$old" ]; then
    prepare_run
    log "$name: the same image is archived with uncompressed layers ($old): compressing it"
    # skopeo unpacks the old archive into its temporary folder first: room for it too
    write_archive "$name" "oci-archive:$old" "$out" "$ref" "$((2 * $(stat -c %s "$old")))"
  else
    prepare_run
    if grep -qE "^FROM +$BASE_REF" "$ctx/Containerfile"; then ensure_base; fi
    start=$(date +%s)
    local args=()
    # pip inside the build trusts what pip here trusts (a network that intercepts TLS has its own CA):
    # the bundle is mounted over the image's empty /mnt for the RUN steps only
    if grep -q '^ARG PIP_CERT' "$ctx/Containerfile"; then
      local ca=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
      if [ -n "$ca" ] && [ -f "$ca" ]; then
        local cadir; cadir=$(mktemp -d); scratch+=("$cadir")
        cp "$ca" "$cadir/ca.crt"
        args+=(--volume "$cadir:/mnt:ro" --build-arg PIP_CERT=/mnt/ca.crt)
      fi
    fi
    log "$name: building $ref from $ctx (hash ${hash:0:16})"
    with_heartbeat "building $name" indented bh bud "${BUD_FLAGS[@]}" "${args[@]}" -f "$ctx/Containerfile" -t "$ref" "$ctx"
    log "$name: built in $(elapsed "$start"); writing the archive"
    write_archive "$name" "containers-storage:[overlay@$STORE/storage+$STORE/run]$ref" "$out" "$ref" \
      "$(bh images --noheading --format '{{.Size}}' "$ref" | tr -d ' B' | numfmt --from=si)"
    log "$name took $(elapsed "$start")"
    if [ "${LFK_KEEP_BUILD_LAYERS:-0}" != 1 ]; then
      # the archive holds the image whole: buildah's copy (its size again) goes before the next image builds
      bh rmi --force "$ref" >/dev/null 2>&1 || true
      prune_dangling
      log "$name: its layers left buildah's storage (LFK_KEEP_BUILD_LAYERS=1 keeps them for quicker rebuilds)"
    fi
  fi
  printf '%s\n' "$out" >"$OUT_DIR/$name.current"
  printf '%s\t%s\t%s\n' "$name" "$out" "$ref"
}

# ------------------------------------------------------------------------------------------------ main
[ $# -gt 0 ] || { echo "usage: $0 NAME... (${ALL_IMAGES[*]}, or all)" >&2; exit 2; }
names=()
for n in "$@"; do
  if [ "$n" = all ]; then names+=("${ALL_IMAGES[@]}"); continue; fi
  [ -n "${IMAGE_REFS[$n]:-}" ] || { echo "unknown image $n (${ALL_IMAGES[*]})" >&2; exit 2; }
  names+=("$n")
done
[ "$(id -u)" = 0 ] || { echo "$0 runs as root (debootstrap and buildah's storage)" >&2; exit 1; }

scratch=()
cleanup() {
  rm -rf "${scratch[@]}"
  # what an interrupted or failed run left half-written (only the run that holds the lock may)
  if [ -n "${prepared:-}" ]; then rm -rf "$CACHE/tmp" "$OUT_DIR"/*.tar.tmp; fi
  # buildah leaves its storage mounted (overlay) after some runs: nothing stays mounted once the script ends
  if [ -d "$STORE/storage" ]; then
    bh unmount --all >/dev/null 2>&1 || true
    awk -v p="$STORE/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT

for n in "${names[@]}"; do
  build_image "$n"
done

# after a build, what no image stands on any more (earlier builds, an older base) leaves buildah's storage;
# with LFK_KEEP_BUILD_LAYERS=1 the layers of the current images stay as the cache of the next build
if [ -n "${prepared:-}" ]; then
  prune_dangling
  log "buildah's storage: $(du -sh "$STORE/storage" | cut -f1)"
fi
