"""The snapshot the light path reads is what the installed LLaMA-Factory says."""

from __future__ import annotations

import json

from generator.core import lfinfo


def test_snapshot_matches_the_installed_llamafactory() -> None:
    live = lfinfo.live_snapshot()
    stored = json.loads(lfinfo.snapshot_path(str(live["version"])).read_text())
    assert stored == json.loads(json.dumps(live)), "run hack/snapshot-llamafactory.py"


def test_templates_and_model_table_cover_the_guides_models() -> None:
    info = lfinfo.info()
    assert {"llama3", "qwen", "mistral", "phi", "qwen3", "default", "empty"} <= info.templates
    assert info.model_templates["llama-3.1-8b-instruct"] == "llama3"
    assert info.model_templates["qwen/qwen2.5-7b-instruct"] == "qwen"
    assert {"lora_rank", "cutoff_len", "export_dir", "infer_dtype"} <= info.arguments


def test_bundled_demo_sets_match_llamafactorys_source_package() -> None:
    """The demo sets `lfk import` registers are those of the pinned version's source package (pip downloads
    it once into the cache, as `lfk data sync --bundled` does)."""
    from generator.checks import llamafactory_source
    from generator.core import bundled

    stored = json.loads(bundled.snapshot_path().read_text())
    assert stored["version"] == lfinfo.SNAPSHOT_VERSION
    package = llamafactory_source.source_package()
    assert stored["datasets"] == bundled.from_source_package(package), (
        "run hack/snapshot-llamafactory.py --bundled"
    )
