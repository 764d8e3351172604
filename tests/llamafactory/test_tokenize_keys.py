"""The tokenize-once key (charts/llama-factory/files/tokenize_once.py) against the installed LLaMA-Factory:
every data and processor argument it has is either in the key, carried into the tokenizing, or known not to
change the tokens; a new argument in a new release fails here until it is placed."""

from __future__ import annotations

import dataclasses
import importlib.util

from generator.project import CHART_FILES


def test_every_data_and_processor_argument_is_placed() -> None:
    from llamafactory.hparams.data_args import DataArguments
    from llamafactory.hparams.model_args import ProcessorArguments

    spec = importlib.util.spec_from_file_location("tokenize_once", CHART_FILES / "tokenize_once.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    placed = set(module.TOKEN_KEYS) | set(module.CARRIED_KEYS) | set(module.NOT_TOKEN_KEYS)
    fields = {f.name for cls in (DataArguments, ProcessorArguments) for f in dataclasses.fields(cls)}
    assert not fields - placed, f"place these in tokenize_once.py: {sorted(fields - placed)}"
    assert not set(module.TOKEN_KEYS) & set(module.CARRIED_KEYS), "a key is hashed or carried, not both"
