"""A training of one process (one GPU or none, no torchrun, no Ray) in one Python process: the preflight's
checklist, LLaMA-Factory's training as `llamafactory-cli train` runs it (its run_exp), then the prompt parity
record beside the result. train.sh starts it instead of three processes that would each import LLaMA-Factory
(seconds of CPU each before any work: about 3.5 s on the test node, more with a GPU build of torch).

    train_in_process.py CONFIG

TOKENIZED_ROOT, when set, names the tokenized sets (tokenize_once.py picks the run's). Exit codes: the
preflight's configError when an item fails (the trainer never starts); otherwise the trainer's, as
llamafactory-cli's (1 on an exception). A record that cannot be written is said and does not fail the run:
helm test of the served model reports it. Runs with several processes go through llamafactory-cli, whose
torchrun starts a fresh process per rank anyway (train.sh).
"""

from __future__ import annotations

import os
import sys

# the other scripts travel beside this one (the pods' /scripts)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import preflight  # noqa: E402
import prompt_parity  # noqa: E402
import tokenize_once  # noqa: E402
from podlib import EXIT  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return EXIT["usage"]
    config_file = argv[0]
    code = preflight.checklist(preflight.load_config(config_file))
    if code != EXIT["ok"]:
        return code
    root = os.environ.get("TOKENIZED_ROOT", "")
    overrides = tokenize_once.trainer_overrides(config_file, root) if root else []
    command = " ".join(["llamafactory-cli", "train", config_file, *overrides])
    print(f"starting: {command} (in the preflight's process)", flush=True)
    from llamafactory.train.tuner import run_exp

    # what LLaMA-Factory's launcher leaves in argv after taking the command: the config, then key=value pairs
    sys.argv = [sys.argv[0], config_file, *overrides]
    run_exp()
    prompt_parity.write_reported(config_file, None, None, "train")
    return EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
