"""lfk import (core/importer.py, cli/import_command.py): a LLaMA-Factory training config becomes an experiment
whose rendered training config keeps every argument of the original with its value, gives the arguments the
original left out LLaMA-Factory's defaults, says what the cluster changed, and refuses what it cannot take,
naming the argument, with nothing written. The configs in tests/cases/import/ take the shapes of
LLaMA-Factory's own examples (LoRA, QLoRA, full with ZeRO-3, freeze)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from generator.cli import cli
from generator.core import catalog, importer, lfinfo
from generator.core.rules.llamafactory import STAGE_ARGS

CASES = Path(__file__).resolve().parents[1] / "cases" / "import"
DEFAULTS = lfinfo.info().defaults
# arguments the rendered config sets otherwise, each checked on its own below
OWN_CHECKS = {
    "model_name_or_path", "dataset", "dataset_dir", "deepspeed", "ddp_timeout", "report_to", "reward_model",
}  # fmt: skip


def lfk_import(config: Path, folder: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        cli, ["import", str(config), "--name", "imported", "--output", str(folder), *extra]
    )


def rendered(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((folder / "train.yaml").read_text())["train"]["config"]
    return config


# PPO's config imports into a spec that `lfk validate` refuses: LLaMA-Factory 0.9.5 cannot train PPO
REFUSED_CASES = {"lora_ppo"}
IMPORTED_CASES = [p for p in sorted(CASES.glob("*.yaml")) if p.stem not in REFUSED_CASES]


@pytest.mark.parametrize("case", IMPORTED_CASES, ids=lambda p: p.stem)
def test_every_argument_reaches_the_rendered_training_config_with_its_value(
    case: Path, tmp_path: Path
) -> None:
    result = lfk_import(case, tmp_path / "imported")
    assert result.exit_code == 0, result.output
    original = yaml.safe_load(case.read_text())
    train = rendered(tmp_path / "imported")
    for key, value in original.items():
        if key in importer.DECIDED or key in OWN_CHECKS:
            continue
        expected = float(value) if key in importer.NUMBERS and isinstance(value, str) else value
        assert train.get(key, "(missing)") == expected, key
    model = original["model_name_or_path"]
    stored = model if model.startswith("/storage/") else f"/storage/models/{catalog.model_key(model)}"
    assert train["model_name_or_path"] == stored
    assert train["dataset"] == ",".join(n.strip() for n in original["dataset"].split(","))
    assert train["dataset_dir"] == original.get("dataset_dir", "/storage/data")
    if "deepspeed" in original:
        assert train["deepspeed"] == "/config/deepspeed.json"
        spec = yaml.safe_load((tmp_path / "imported" / "experiment.yaml").read_text())
        assert spec["distributed"]["deepspeed"] == "zero3"
    # what the original left out is LLaMA-Factory's default, not the spec's
    method = original.get("finetuning_type", "lora")
    for key in (*importer.KEEP_DEFAULTS["all"], *importer.KEEP_DEFAULTS.get(method, ())):
        if key not in original and not (key == "save_steps" and train["save_strategy"] != "steps"):
            assert train[key] == DEFAULTS[key], key


def test_what_the_cluster_decides_is_changed_and_said(tmp_path: Path) -> None:
    result = lfk_import(CASES / "lora_sft.yaml", tmp_path / "imported")
    assert result.exit_code == 0, result.output
    for line in (
        "changed: output_dir: 'saves/qwen2.5-7b/lora/sft' dropped: the output is /storage/output/<name>/<run id>",
        "changed: overwrite_output_dir: True dropped: never overwritten",
        "changed: plot_loss: True dropped: always on",
        "changed: ddp_timeout: 180000000 s capped at 604800 s (7 days)",
        "changed: dataset_dir: LLaMA-Factory's default 'data' becomes /storage/data on the storage",
        "changed: save_total_limit: LLaMA-Factory keeps every checkpoint; the spec keeps the last 3",
    ):
        assert line in result.output, result.output
    text = (tmp_path / "imported" / "experiment.yaml").read_text()
    assert "# Changed on the way, because the cluster decides it:\n#   output_dir:" in text
    train = rendered(tmp_path / "imported")
    assert (
        train["output_dir"].startswith("/storage/output/imported/") and train["overwrite_output_dir"] is False
    )
    # what the spec has no field for is passed through, as it was
    spec = yaml.safe_load(text)
    assert spec["llamafactoryArgs"] == {
        "overwrite_cache": True, "dataloader_num_workers": 2, "save_only_model": False,
        "resume_from_checkpoint": None, "per_device_eval_batch_size": 1, "eval_strategy": "steps", "eval_steps": 200,
    }  # fmt: skip


def test_qlora_takes_the_image_with_bitsandbytes_and_mlflow_needs_a_tracking_uri(tmp_path: Path) -> None:
    result = lfk_import(CASES / "qlora_sft.yaml", tmp_path / "imported")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "imported" / "experiment.yaml").read_text())
    assert spec["method"]["type"] == "qlora" and "llamafactory-plus" in spec["images"]["llamafactory"]
    assert "changed: report_to: 'mlflow' dropped: set tracking.mlflow.trackingUri" in result.output


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"lora_rnak": 8}, "$.lora_rnak", "LLaMA-Factory 0.9.5 has no argument 'lora_rnak' (hint: did you mean lora_rank"),
        ({"stage": "grpo"}, "$.stage", "stage 'grpo': LLaMA-Factory trains pt, sft, rm, ppo, dpo, kto"),
        ({"stage": "ppo", "reward_model": "http://scores", "reward_model_type": "api"}, "$.reward_model_type",
         "reward_model_type 'api': the spec's PPO scores with a reward model on the storage"),
        ({"finetuning_type": "dora"}, "$.finetuning_type", "finetuning_type 'dora': the spec has lora, oft, full, freeze"),
        ({"deepspeed": "my_settings.json"}, "$.deepspeed", "deepspeed 'my_settings.json': not a ZeRO-2 or ZeRO-3 config"),
        ({"do_train": False}, "$.do_train", "a config that does not train"),
    ],
)  # fmt: skip
def test_what_cannot_be_taken_is_named_and_nothing_is_written(
    tmp_path: Path, change: dict[str, Any], path: str, message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load((CASES / "lora_sft.yaml").read_text()), **change}))
    result = lfk_import(config, tmp_path / "imported")
    assert result.exit_code == 1
    assert f"{config}::{path}: {message}" in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "imported").exists()


def test_a_file_that_is_not_a_config_and_an_existing_experiment_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "list.yaml"
    config.write_text("- a\n- b\n")
    result = lfk_import(config, tmp_path / "imported")
    assert result.exit_code == 1 and f"{config}::$: a LLaMA-Factory config is a mapping" in result.output
    assert lfk_import(CASES / "freeze.yaml", tmp_path / "imported").exit_code == 0
    again = lfk_import(CASES / "freeze.yaml", tmp_path / "imported")
    assert again.exit_code == 1 and "experiment.yaml exists already" in again.output


def test_a_spec_the_schema_refuses_is_not_written(tmp_path: Path) -> None:
    """A value the importer passes on as it is (a batch size of 0) meets the schema, which names it."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {**yaml.safe_load((CASES / "freeze.yaml").read_text()), "per_device_train_batch_size": 0}
        )
    )
    result = lfk_import(config, tmp_path / "imported")
    assert result.exit_code == 1
    assert "experiment.yaml::$.training.batchSize: 0 is less than the minimum of 1" in result.output, (
        result.output
    )
    assert not (tmp_path / "imported" / "experiment.yaml").exists()


def test_a_value_cannot_break_out_of_its_comment(tmp_path: Path) -> None:
    """The notes become comments in the spec: a line break in a value stays escaped inside its comment."""
    config = tmp_path / "config.yaml"
    hostile = "ds_z3.json\nimages: {llamafactory: evil}"
    config.write_text(
        yaml.safe_dump({**yaml.safe_load((CASES / "full_zero3.yaml").read_text()), "deepspeed": hostile})
    )
    result = lfk_import(config, tmp_path / "imported")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "imported" / "experiment.yaml").read_text())
    assert "images" not in spec
    assert (
        "#   deepspeed: ds_z3.json\\nimages: {llamafactory: evil} becomes"
        in (tmp_path / "imported" / "experiment.yaml").read_text()
    )


@pytest.mark.parametrize("stage", ["dpo", "kto", "rm", "pt"])
def test_a_stage_and_its_own_arguments_reach_the_spec(tmp_path: Path, stage: str) -> None:
    case = {"dpo": "lora_dpo", "kto": "lora_kto", "rm": "lora_reward", "pt": "lora_pretrain"}[stage]
    result = lfk_import(CASES / f"{case}.yaml", tmp_path / "imported")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "imported" / "experiment.yaml").read_text())
    assert spec["stage"]["type"] == stage
    original = yaml.safe_load((CASES / f"{case}.yaml").read_text())
    for key, field in STAGE_ARGS.get(stage, {}).items():
        if key in original:
            assert spec["stage"][stage][field] == original[key], key
    # a reward model scores answers: no vLLM release is written for it
    assert (tmp_path / "imported" / "vllm.yaml").exists() == (stage != "rm")


def test_ppo_imports_its_settings_but_is_refused_for_the_deployed_llamafactory(tmp_path: Path) -> None:
    result = lfk_import(CASES / "lora_ppo.yaml", tmp_path / "imported")
    assert result.exit_code == 1
    assert (
        "reward_model: saves/llama3-8b/lora/reward is not on the storage: copy the reward model to "
        in result.output
    )
    assert "::$.stage.type: LLaMA-Factory 0.9.5 cannot train PPO" in result.output, result.output
    assert not (tmp_path / "imported").exists()


def test_another_stages_arguments_are_dropped_with_a_note(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({**yaml.safe_load((CASES / "lora_sft.yaml").read_text()), "pref_beta": 0.2})
    )
    result = lfk_import(config, tmp_path / "imported")
    assert result.exit_code == 0, result.output
    assert "pref_beta: 0.2 dropped: it applies to stage dpo, kto, not sft" in result.output


def test_llamafactorys_bundled_demo_sets_are_registered_as_its_dataset_info_has_them(tmp_path: Path) -> None:
    """identity and alpaca_en_demo (LLaMA-Factory's examples train on them, from its own data/ folder): the
    spec registers each as LLaMA-Factory's data/dataset_info.json does, and says how its file reaches the
    storage; a config with a dataset_dir of its own keeps its names as the user's."""
    result = lfk_import(CASES / "lora_sft.yaml", tmp_path / "imported")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "imported" / "experiment.yaml").read_text())
    assert spec["data"]["register"] == {
        "identity": {"file": "identity.json", "format": "alpaca"},
        "alpaca_en_demo": {"file": "alpaca_en_demo.json", "format": "alpaca"},
    }
    assert (
        "changed: dataset: alpaca_en_demo is LLaMA-Factory's bundled demo set: registered in data.register as its "
        "data/dataset_info.json has it; `lfk data sync SPEC --storage-root DIR --bundled` copies alpaca_en_demo.json "
        "from llamafactory 0.9.5's source package"
    ) in " ".join(result.output.split())
    dpo = lfk_import(CASES / "lora_dpo.yaml", tmp_path / "dpo")
    assert dpo.exit_code == 0, dpo.output
    pairs = yaml.safe_load((tmp_path / "dpo" / "experiment.yaml").read_text())["data"]["register"][
        "dpo_en_demo"
    ]
    assert pairs == {
        "file": "dpo_en_demo.json", "format": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    }  # fmt: skip
    own = lfk_import(CASES / "full_zero3.yaml", tmp_path / "own")  # dataset_dir: /storage/data
    assert own.exit_code == 0, own.output
    assert "register" not in yaml.safe_load((tmp_path / "own" / "experiment.yaml").read_text())["data"]


def test_every_bundled_demo_set_is_a_register_entry_the_spec_accepts() -> None:
    from generator.core import bundled
    from tests.support.specs import spec_with

    demo = bundled.datasets()
    assert {"identity", "alpaca_en_demo", "dpo_en_demo", "kto_en_demo", "c4_demo", "mllm_demo"} <= set(demo)
    for name, entry in demo.items():
        spec_with({"data": {"datasets": ["qa_dataset"], "register": {name: entry}}})  # raises when refused


def test_a_bundled_file_is_read_only_from_inside_the_packages_data_folder(tmp_path: Path) -> None:
    import io
    import tarfile

    from generator.core import bundled

    package = tmp_path / "llamafactory-0.9.5.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        for name in ("llamafactory-0.9.5/setup.py", "llamafactory-0.9.5/data/a.json"):
            member = tarfile.TarInfo(name)
            member.size = 2
            tar.addfile(member, io.BytesIO(b"[]"))
    assert bundled.read_file(package, "a.json") == b"[]"
    for outside in ("../setup.py", "/etc/passwd", "", "sub/../../setup.py"):
        with pytest.raises(KeyError):
            bundled.read_file(package, outside)
