"""The facts the generator, the chart's templates and the pods' scripts share, read once from the chart's
`files/contract.json` (the one home of each: a copy here that disagreed would only be a second truth).
Everything in the generator that names a storage path, a port, an exit code, a marker file, a LoRA rank, a
merge size ratio, a component, the part-of label or a pinned version takes it from these constants."""

from __future__ import annotations

import json
from typing import Any

from ..project import CHART_FILES

CONTRACT_FILE = CHART_FILES / "contract.json"
CONTRACT: dict[str, Any] = json.loads(CONTRACT_FILE.read_text(encoding="utf-8"))

LLAMAFACTORY_VERSION: str = CONTRACT["versions"]["llamafactory"]
VLLM_VERSION: str = CONTRACT["versions"]["vllm"]

STORAGE: dict[str, str] = CONTRACT["storage"]
STORAGE_ROOT = STORAGE["root"]
MODELS_DIR = STORAGE["models"]
# where merged models are published when the spec does not say: one folder per experiment, one per run in it
MERGED_DIR = STORAGE["merged"]
DATA_DIR = STORAGE["data"]
OUTPUT_DIR = STORAGE["output"]
TOKENIZED_DIR = STORAGE["tokenized"]
LLAMABOARD_DIR = STORAGE["llamaboard"]
SERVING_DIR = STORAGE["serving"]

PORTS: dict[str, int] = CONTRACT["ports"]
EXIT: dict[str, int] = CONTRACT["exitCodes"]
# exit codes a retry cannot mend: the Job stops at once instead of spending its backoff
FAIL_AT_ONCE: tuple[int, ...] = tuple(EXIT[name] for name in CONTRACT["failAtOnce"])
TOKENIZED_MARKER: str = CONTRACT["files"]["tokenizedMarker"]
# written beside a trained or merged model: its prompts as LLaMA-Factory formats them (files/prompt_parity.py)
PROMPT_PARITY_RECORD: str = CONTRACT["files"]["promptParityRecord"]
VLLM_LORA_RANKS: tuple[int, ...] = tuple(CONTRACT["vllm"]["loraRanks"])
MERGE_MIN_SIZE_RATIO: float = CONTRACT["merge"]["minSizeRatio"]
MERGE_MAX_SIZE_RATIO: float = CONTRACT["merge"]["maxSizeRatio"]
COMPONENT_NAMES: tuple[str, ...] = tuple(CONTRACT["components"])
PART_OF: str = CONTRACT["labels"]["partOf"]
# the evaluation gate's metrics: scored from generated answers or from likelihoods (files/likelihood.py), those
# where less is better, and those compared with chance instead of the base model
GATE_GENERATION_METRICS: tuple[str, ...] = tuple(CONTRACT["gate"]["generationMetrics"])
GATE_LIKELIHOOD_METRICS: tuple[str, ...] = tuple(CONTRACT["gate"]["likelihoodMetrics"])
GATE_LOWER_IS_BETTER: tuple[str, ...] = tuple(CONTRACT["gate"]["lowerIsBetter"])
GATE_AGAINST_CHANCE: tuple[str, ...] = tuple(CONTRACT["gate"]["againstChance"])
