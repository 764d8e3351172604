"""The training ranks' sitecustomize in a multi-node run without GPUs (train.sh puts a copy on the trainer's
PYTHONPATH when LFK_RANKS_ON_CPU=1, never for other commands).

accelerate names a CPU rank's device cpu:0, and on resume the Trainer loads the optimizer state with
torch.load(map_location="cpu:0"), a location torch's loader refuses ("don't know how to restore data location
... cpu:0"): a preempted CPU run could never resume. Measured with transformers 5.6 and torch 2.11; GPU runs
load to cuda:N and never get here. Here cpu:N is taught to mean the CPU.
"""

import re
from typing import TypeVar

import torch.serialization

Stored = TypeVar("Stored")


def _no_tag(_obj: object) -> None:
    return None  # saving is left to torch's own taggers


def _cpu_rank(obj: Stored, location: str) -> Stored | None:
    return obj if re.fullmatch(r"cpu:\d+", location) else None


torch.serialization.register_package(11, _no_tag, _cpu_rank)  # after torch's cpu (10), before cuda (20)
