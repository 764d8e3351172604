#!/usr/bin/env bash
# make test's slow tiers side by side on one machine. In the foreground, the node tier: it owns the machine's
# one real node and trains and serves in its pods, so it sets the pace, and its pods leave a core idle for much
# of its run. In the background, one after the other: the chart tier on two workers (helm, CPU-bound and done
# early, so a broken chart still shows within minutes), the cluster tier, in three workers by test file (it
# mostly waits on its API servers and controllers, each worker starting its own), then the LLaMA-Factory tier,
# which trains on the CPU, at a lower priority so that the node tier's pods keep theirs. Each pytest has its
# own temporary folder; each background tier's exit code is said when it ends, its output follows once both
# lanes are done. Exits non-zero when any tier failed.
#   hack/test-slow-tiers.sh PYTEST [PYTEST_ARGS...]
#   LFK_CLUSTER_WORKERS   the cluster tier's workers (default 3)
set -uo pipefail
pytest=$1
shift
workers=${LFK_CLUSTER_WORKERS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/lfk-slow-tiers.XXXXXX")
# a background tier: its output to its log, its exit code to its .rc file and said at once
tier() {
  local name=$1
  shift
  "$@" --basetemp="$work/$name" >"$work/$name.log" 2>&1
  local rc=$?
  echo "$rc" >"$work/$name.rc"
  # on a line of its own: the node tier's progress dots may be mid-line
  printf "\n(background) the %s tier ended: exit %s; its output follows the node tier's\n" "$name" "$rc"
}
(
  tier chart "$pytest" -m chart -n 2 "$@"
  tier cluster "$pytest" -m cluster -n "$workers" --dist loadfile "$@"
  tier llamafactory nice -n 10 "$pytest" -m llamafactory "$@"
) &
background=$!
# an interrupt reaches the background's pytest (the subshell's child) too
trap 'pkill -INT -P "$background"; wait "$background"; exit 130' INT TERM
echo "in the background (pid $background): the chart tier, the cluster tier, then the LLaMA-Factory tier; their output follows the node tier's"
"$pytest" -m node "$@"
node=$?
wait "$background"
trap - INT TERM
status=0
for tier in chart cluster llamafactory; do
  echo
  echo "---------------------------------------- the $tier tier ----------------------------------------"
  cat "$work/$tier.log" 2>/dev/null
  rc=$(cat "$work/$tier.rc" 2>/dev/null || echo "never finished")
  echo "$tier tier: exit $rc"
  [ "$rc" = 0 ] || status=1
done
rm -rf "$work"
echo "slow tiers: node exit $node; chart, cluster and llamafactory above"
[ "$node" -eq 0 ] && exit "$status"
exit 1
