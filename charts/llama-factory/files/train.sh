#!/bin/bash
# Training container entrypoint (the LLaMA-Factory image has none). A preflight first, so that a
# configuration error exits 3 - which the Job's podFailurePolicy turns into an immediate failure - instead
# of burning retries or holding GPUs; then LLaMA-Factory's training (`llamafactory-cli train`), which resumes
# from the run's last checkpoint because output_dir is per run and overwrite_output_dir is false. Exit 4: the
# GPU ran out of memory.
# Started as `python3 /scripts/boot.py train.sh` when the values name extra Python packages.
set -uo pipefail
# the pod mounts the config at /config and the scripts at /scripts; both can be pointed elsewhere
CONFIG=${TRAIN_CONFIG:-/config/train.yaml}
SCRIPTS=$(dirname "$0")

# Kubeflow's operators describe the group as PET_* (torchrun's own names); LLaMA-Factory's launcher reads
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT and NPROC_PER_NODE. Values set explicitly win.
if [ -n "${PET_NNODES:-}" ]; then
  export NNODES="${NNODES:-${PET_NNODES}}" NODE_RANK="${NODE_RANK:-${PET_NODE_RANK:-0}}"
  export MASTER_ADDR="${MASTER_ADDR:-${PET_MASTER_ADDR:-127.0.0.1}}" MASTER_PORT="${MASTER_PORT:-${PET_MASTER_PORT:-29500}}"
  export NPROC_PER_NODE="${NPROC_PER_NODE:-${PET_NPROC_PER_NODE:-1}}" FORCE_TORCHRUN=1
  echo "distributed: node ${NODE_RANK} of ${NNODES}, ${NPROC_PER_NODE} processes, rendezvous ${MASTER_ADDR}:${MASTER_PORT}"
  # the training operator also sets WORLD_SIZE and RANK (the node's): with them every Python step before the
  # launch (the preflight's argument parsing) joins a process group of its own at MASTER_ADDR, and a replaced
  # Worker's preflight waits there for a Master that is already in torch's next rendezvous. torchrun gives
  # each training process its own.
  unset WORLD_SIZE RANK
fi

# the values' extra packages (PIP_PACKAGES) are installed by boot.py, which starts this script
# the exit code of a GPU out of memory, from the contract (contract.json, read by podlib.py beside this script)
OOM_EXIT=$(python3 "${SCRIPTS}/podlib.py" exitCodes.gpuOutOfMemory) || exit 1

# a switch of LLaMA-Factory's launcher, read as it reads them (true, y or 1, in any case)
enabled() { case "${1,,}" in true | y | 1) return 0 ;; *) return 1 ;; esac }
# One process (one GPU or none: the chart sets FORCE_TORCHRUN for more, and for several nodes or DeepSpeed; not
# on Ray, nor with Megatron's USE_MCA, which the launcher runs under torchrun): the preflight, the training and
# the prompt record run in one Python process, which imports LLaMA-Factory once instead of three times
# (train_in_process.py). Otherwise each step is its own process: torchrun starts every rank afresh.
ONE_PROCESS=0
if ! enabled "${FORCE_TORCHRUN:-0}" && ! enabled "${USE_RAY:-0}" && ! enabled "${USE_MCA:-0}"; then
  ONE_PROCESS=1
  TRAINER=(python3 "${SCRIPTS}/train_in_process.py" "${CONFIG}")
else
  # on Ray the entrypoint runs on the GPU-less head; the workers get the GPUs
  PREFLIGHT_FLAGS=()
  enabled "${USE_RAY:-0}" && PREFLIGHT_FLAGS+=(--cpu)
  python3 "${SCRIPTS}/preflight.py" "${CONFIG}" "${PREFLIGHT_FLAGS[@]}" || exit $?
  # the data tokenized once by the release's GPU-less tokenize hook (the set it noted for this run, else the one
  # keyed by the inputs), when it is there; otherwise the trainer tokenizes as usual
  TRAIN_ARGS=()
  if [ -n "${TOKENIZED_ROOT:-}" ]; then
    overrides=$(python3 "${SCRIPTS}/tokenize_once.py" overrides "${CONFIG}" "${TOKENIZED_ROOT}") || exit $?
    [ -n "${overrides}" ] && mapfile -t TRAIN_ARGS <<<"${overrides}"
  fi
  TRAINER=(llamafactory-cli train "${CONFIG}" "${TRAIN_ARGS[@]}")
  echo "starting: ${TRAINER[*]}"
fi
# ranks on CPU (a rehearsal without GPUs): torch learns to load a checkpoint saved from a cpu:N device
TRAINER_ENV=()
# this script's own temporary files go with it: where it runs outside a pod (the LLaMA-Factory test tier, a
# person's machine) /tmp is shared and outlives it
site="" OUTPUT=""
trap 'rm -rf "${site}" "${OUTPUT}"' EXIT
if [ "${LFK_RANKS_ON_CPU:-0}" = "1" ]; then
  site=$(mktemp -d "${TMPDIR:-/tmp}/lfk-site.XXXXXX") && cp "${SCRIPTS}/cpu_ranks.py" "${site}/sitecustomize.py" || exit 1
  TRAINER_ENV+=("PYTHONPATH=${site}${PYTHONPATH:+:${PYTHONPATH}}")
fi
# the trainer runs as a child, its output also kept, so a CUDA out-of-memory error can fail the Job at once
# (exit 4, in the podFailurePolicy) instead of being retried; SIGTERM (preemption) is passed on to it
OUTPUT=$(mktemp "${TMPDIR:-/tmp}/train-output.XXXXXX") || exit 1  # its own: ranks sharing a /tmp keep their output apart
: >"${OUTPUT}"
env "${TRAINER_ENV[@]}" "${TRAINER[@]}" >>"${OUTPUT}" 2>&1 &
trainer=$!
tail -n +1 -f --pid="${trainer}" "${OUTPUT}" &  # the pod's log: prints to the end, then exits with the trainer
follower=$!
trap 'kill -TERM "${trainer}" 2>/dev/null' TERM INT
wait "${trainer}"
code=$?
while kill -0 "${trainer}" 2>/dev/null; do  # a trapped signal ended the first wait, not the trainer
  wait "${trainer}"
  code=$?
done
wait "${follower}"
if [ "${code}" -ne 0 ] && grep -qE "CUDA out of memory|OutOfMemoryError" "${OUTPUT}"; then
  echo "train: the GPU ran out of memory (CUDA OOM); lfk status SPEC shows the estimate and what to change" >&2
  exit "${OOM_EXIT}"
fi
if [ "${code}" -eq 0 ] && [ "${ONE_PROCESS}" = 0 ] && [ "${NODE_RANK:-0}" = "0" ]; then
  # beside the result, the prompts as LLaMA-Factory formats them and its template's stop tokens: helm test of
  # the served model compares them with what vLLM builds. A missing record is reported there, not here.
  python3 "${SCRIPTS}/prompt_parity.py" write "${CONFIG}" --after train
fi
exit "${code}"
