"""A fault for the node tier to rehearse, loaded through PYTHONPATH by every Python process of a pod that
mounts this folder: with LFK_FAULT=drop-weights, the export (`llamafactory-cli export`) loses the weights it
wrote when it exits, as an export interrupted by a full disk or a killed pod would. The merge Job's own
verification must then refuse the model and never publish it."""

import atexit
import glob
import os
import sys


def _drop_weights() -> None:
    targets = [a.split("=", 1)[1] for a in sys.argv if a.startswith("export_dir=")]
    for folder in targets:
        for weights in glob.glob(os.path.join(folder, "*.safetensors")):
            os.remove(weights)
            print(f"fault: removed {weights}", flush=True)


# the export's process: llamafactory-cli's, or merge.sh's export in one process (its argv names export_dir= too)
EXPORTERS = ("llamafactory-cli", "export_in_process.py")
if os.environ.get("LFK_FAULT") == "drop-weights" and os.path.basename(sys.argv[0]) in EXPORTERS:
    atexit.register(_drop_weights)
