#!/bin/bash
# Merge container entrypoint: export into a staging directory beside the target, verify the result, and
# only then move it into place, so the serving path never holds a half-written or doubled model. A rerun
# over a complete result for the same adapter does nothing.
set -euo pipefail
# the pod mounts the config at /config and the scripts at /scripts; both can be pointed elsewhere
CONFIG=${MERGE_CONFIG:-/config/merge.yaml}
SCRIPTS=$(dirname "$0")
TARGET="${EXPORT_DIR%/}"
STAGING="${TARGET}.partial"
CONFIG_ERROR=$(python3 "${SCRIPTS}/podlib.py" exitCodes.configError)
# the size ratios default to the contract's (verify_merge.py reads them); MIN/MAX_SIZE_RATIO override them
VERIFY=(python3 "${SCRIPTS}/verify_merge.py" --base "${BASE_MODEL_DIR}" --dtype "${MERGE_DTYPE}"
  --adapter "${ADAPTER_DIR}")
if [ -n "${MIN_SIZE_RATIO:-}" ]; then VERIFY+=(--min-ratio "${MIN_SIZE_RATIO}"); fi
if [ -n "${MAX_SIZE_RATIO:-}" ]; then VERIFY+=(--max-ratio "${MAX_SIZE_RATIO}"); fi

if [ -d "${TARGET}" ] && "${VERIFY[@]}" --quiet "${TARGET}"; then
  echo "merge: ${TARGET} is complete for adapter ${ADAPTER_DIR}; nothing to do"
  exit 0
fi
if [ ! -f "${ADAPTER_DIR}/adapter_config.json" ]; then
  echo "merge: ${ADAPTER_DIR}/adapter_config.json not found: has the train Job of this run completed?" >&2
  exit "${CONFIG_ERROR}"
fi

rm -rf "${STAGING}"
echo "merge: llamafactory-cli export ${CONFIG} export_dir=${STAGING}, then its prompt record (one process)"
# then the prompts as LLaMA-Factory formats them for the merged model, the same ones as the training's record
RECORD=$(python3 "${SCRIPTS}/podlib.py" files.promptParityRecord)
python3 "${SCRIPTS}/export_in_process.py" "${CONFIG}" "${STAGING}" "${ADAPTER_DIR}/${RECORD}"
"${VERIFY[@]}" --record "${STAGING}"

mkdir -p "$(dirname "${TARGET}")"
if [ -e "${TARGET}" ]; then
  mv "${TARGET}" "${TARGET}.old"
fi
mv "${STAGING}" "${TARGET}"
rm -rf "${TARGET}.old"
echo "merge: published ${TARGET}"
