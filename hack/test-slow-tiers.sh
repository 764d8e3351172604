#!/usr/bin/env bash
# make test's slow tiers side by side on one machine: the cluster tier, which mostly waits on its API server
# and controllers, in the background; the LLaMA-Factory and node tiers, which train on the CPU (and the node
# tier owns the machine's one real node), in the foreground. Each is its own pytest with its own temporary
# folder; the cluster tier's output follows once both are done. Exits non-zero when either failed.
#   hack/test-slow-tiers.sh PYTEST [PYTEST_ARGS...]
set -uo pipefail
pytest=$1
shift
work=$(mktemp -d "${TMPDIR:-/tmp}/lfk-cluster-tier.XXXXXX")
"$pytest" -m cluster --basetemp="$work/tmp" "$@" >"$work/log" 2>&1 &
cluster=$!
trap 'kill -INT "$cluster" 2>/dev/null; wait "$cluster"; exit 130' INT TERM
echo "the cluster tier runs in the background (pid $cluster); its output follows the LLaMA-Factory and node tiers"
"$pytest" -m "llamafactory or node" "$@"
real=$?
wait "$cluster"
clustered=$?
trap - INT TERM
echo
echo "---------------------------------------- the cluster tier ----------------------------------------"
cat "$work/log"
rm -rf "$work"
echo "slow tiers: llamafactory and node exit $real, cluster exit $clustered"
[ "$real" -eq 0 ] && [ "$clustered" -eq 0 ]
