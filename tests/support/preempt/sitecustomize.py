"""Loaded by every Python process of a run started with this folder on PYTHONPATH and LFK_SMOKE_PREEMPT=1:
once the trainer has saved its first checkpoint, its process kills itself with SIGKILL, as a
preempted pod would be killed. A tiny model trains all its steps in a fraction of a second, too fast to
interrupt from outside at a chosen point."""

import os
import signal
import sys


def _preempt_after_first_save() -> None:
    from transformers import Trainer, TrainerCallback

    class Preempt(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            os.kill(os.getpid(), signal.SIGKILL)

    original = Trainer.__init__

    def patched(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        self.add_callback(Preempt())

    Trainer.__init__ = patched


# the trainer's process: llamafactory-cli's, or train.sh's one-process training
TRAINERS = ("llamafactory-cli", "train_in_process.py")
if os.environ.get("LFK_SMOKE_PREEMPT") == "1" and os.path.basename(sys.argv[0]) in TRAINERS:
    _preempt_after_first_save()
