"""The merge's export and its prompt record in one Python process: LLaMA-Factory's export as
`llamafactory-cli export CONFIG export_dir=DIR` runs it (its export_model), then the prompt parity record of
the merged model in DIR, made from the same conversations as the training's record. merge.sh starts it instead
of two processes that would each import LLaMA-Factory (seconds of CPU each before any work).

    export_in_process.py CONFIG EXPORT_DIR TRAINING_RECORD

Exit code: the export's, as llamafactory-cli's (1 on an exception). A record that cannot be written is said
and does not fail the merge: helm test of the served model reports it.
"""

from __future__ import annotations

import os
import sys

# the other scripts travel beside this one (the pods' /scripts)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prompt_parity  # noqa: E402
from podlib import EXIT  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return EXIT["usage"]
    config_file, export_dir, training_record = argv
    from llamafactory.train.tuner import export_model

    # what LLaMA-Factory's launcher leaves in argv after taking the command: the config, then key=value pairs
    sys.argv = [sys.argv[0], config_file, f"export_dir={export_dir}"]
    export_model()
    prompt_parity.write_reported(config_file, export_dir, training_record, "merge")
    return EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
