#!/usr/bin/env bash
# make test's slow tiers side by side on one machine. In the foreground, the node tier: it owns the machine's
# one real node and trains and serves in its pods, so it sets the pace. In the background, one after the
# other: the cluster tier, in three workers by test file (it mostly waits on its API servers and controllers,
# each worker starting its own), then the LLaMA-Factory tier, which trains on the CPU, at a lower priority so
# that the node tier's pods keep theirs. Each pytest has its own temporary folder; the background's output
# follows once both lanes are done. Exits non-zero when any tier failed.
#   hack/test-slow-tiers.sh PYTEST [PYTEST_ARGS...]
#   LFK_CLUSTER_WORKERS   the cluster tier's workers (default 3)
set -uo pipefail
pytest=$1
shift
workers=${LFK_CLUSTER_WORKERS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/lfk-slow-tiers.XXXXXX")
(
  "$pytest" -m cluster -n "$workers" --dist loadfile --basetemp="$work/cluster" "$@" >"$work/cluster.log" 2>&1
  echo $? >"$work/cluster.rc"
  nice -n 10 "$pytest" -m llamafactory --basetemp="$work/llamafactory" "$@" >"$work/llamafactory.log" 2>&1
  echo $? >"$work/llamafactory.rc"
) &
background=$!
# an interrupt reaches the background's pytest (the subshell's child) too
trap 'pkill -INT -P "$background"; wait "$background"; exit 130' INT TERM
echo "in the background (pid $background): the cluster tier, then the LLaMA-Factory tier; their output follows the node tier's"
"$pytest" -m node "$@"
node=$?
wait "$background"
trap - INT TERM
status=0
for tier in cluster llamafactory; do
  echo
  echo "---------------------------------------- the $tier tier ----------------------------------------"
  cat "$work/$tier.log" 2>/dev/null
  rc=$(cat "$work/$tier.rc" 2>/dev/null || echo "never finished")
  echo "$tier tier: exit $rc"
  [ "$rc" = 0 ] || status=1
done
rm -rf "$work"
echo "slow tiers: node exit $node; cluster and llamafactory above"
[ "$node" -eq 0 ] && exit "$status"
exit 1
