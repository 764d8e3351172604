#!/usr/bin/env bash
# make test's pytest tiers on one machine. The node tier owns the machine's one real node and sets the pace,
# so it starts first, in the background: its cluster comes up and its first tests run while the unit tier
# runs in the foreground on two workers. A failing unit tier stops the node tier and fails the run within its
# minute; once it passes, the node tier's output is followed live (from its start). Beside the node tier, one
# after the other, in the CPU its pods leave idle: the chart tier on two workers (helm, CPU-bound and done
# early, so a broken chart still shows within minutes), the cluster tier, in three workers by test file (it
# mostly waits on its API servers and controllers, each worker starting its own), then the LLaMA-Factory tier,
# which trains on the CPU, at a lower priority so that the node tier's pods keep theirs. Each pytest has its
# own temporary folder; each background tier's exit code is said when it ends, its output follows once both
# lanes are done. The slow tiers list their slowest tests. Exits non-zero when any tier failed.
#   hack/test-tiers.sh PYTEST [PYTEST_ARGS...]
#   LFK_CLUSTER_WORKERS   the cluster tier's workers (default 3)
set -uo pipefail
pytest=$1
shift
workers=${LFK_CLUSTER_WORKERS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/lfk-tiers.XXXXXX")
# a background tier: its output to its log, its exit code to its .rc file and said at once
tier() {
  local name=$1
  shift
  "$@" --durations=20 --basetemp="$work/$name" >"$work/$name.log" 2>&1
  local rc=$?
  echo "$rc" >"$work/$name.rc"
  # on a line of its own: the node tier's progress dots may be mid-line
  [ "$name" = node ] || printf "\n(background) the %s tier ended: exit %s; its output follows the node tier's\n" "$name" "$rc"
}
tier node "$pytest" -m node "$@" &
node=$!
background=""
# an interrupt reaches every tier's pytest (each subshell's child)
stop() {
  pkill -INT -P "$node"
  [ -n "$background" ] && pkill -INT -P "$background"
  wait
}
trap 'stop; exit 130' INT TERM
echo "the node tier started in the background (pid $node): its cluster comes up while the unit tier runs"
"$pytest" -m unit -n 2 "$@"
unit=$?
if [ "$unit" -ne 0 ]; then
  echo "the unit tier failed (exit $unit): the node tier is stopped, the other tiers do not start"
  stop
  rm -rf "$work"
  exit 1
fi
(
  tier chart "$pytest" -m chart -n 2 "$@"
  tier cluster "$pytest" -m cluster -n "$workers" --dist loadfile "$@"
  tier llamafactory nice -n 10 "$pytest" -m llamafactory "$@"
) &
background=$!
echo "in the background (pid $background): the chart tier, the cluster tier, then the LLaMA-Factory tier"
echo "---------------------------------------- the node tier ----------------------------------------"
tail -n +1 -f --pid="$node" "$work/node.log"
wait "$node"
wait "$background"
trap - INT TERM
status=0
for tier in node chart cluster llamafactory; do
  rc=$(cat "$work/$tier.rc" 2>/dev/null || echo "never finished")
  if [ "$tier" != node ]; then
    echo
    echo "---------------------------------------- the $tier tier ----------------------------------------"
    cat "$work/$tier.log" 2>/dev/null
  fi
  echo "$tier tier: exit $rc"
  [ "$rc" = 0 ] || status=1
done
rm -rf "$work"
exit "$status"
