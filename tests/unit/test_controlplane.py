"""The control plane's command lines (generator/cluster/controlplane.py), without starting it: how the
scheduler is told to score nodes (`lfk cluster up --scheduling`), and that the profile docs/local-cluster.md
recommends is the one `binpack` runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.cluster import controlplane
from generator.cluster.state import State
from generator.project import REPO_ROOT


def state_in(folder: Path) -> State:
    return State(folder, ports={"scheduler": 10259})


def test_spread_is_kubernetes_default_scheduler_with_flags_and_no_file(tmp_path: Path) -> None:
    argv = controlplane.scheduler_argv(state_in(tmp_path), Path("/bin/kube-scheduler"), "spread")
    assert f"--kubeconfig={tmp_path / 'kubeconfig'}" in argv and "--leader-elect=false" in argv
    assert not any(a.startswith("--config") for a in argv) and not (tmp_path / "scheduler.json").exists()


def test_binpack_scores_gpus_most_allocated_from_a_config_file_with_the_client_in_it(tmp_path: Path) -> None:
    argv = controlplane.scheduler_argv(state_in(tmp_path), Path("/bin/kube-scheduler"), "binpack")
    assert f"--config={tmp_path / 'scheduler.json'}" in argv
    # with --config the scheduler ignores --kubeconfig and --leader-elect: they must be in the file
    assert not any(a.startswith(("--kubeconfig", "--leader-elect")) for a in argv)
    assert "--bind-address=127.0.0.1" in argv and "--secure-port=10259" in argv
    config = json.loads((tmp_path / "scheduler.json").read_text(encoding="utf-8"))
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["clientConnection"]["kubeconfig"] == str(tmp_path / "kubeconfig")
    assert config["leaderElection"] == {"leaderElect": False}
    [profile] = config["profiles"]
    [fit] = profile["pluginConfig"]
    strategy = fit["args"]["scoringStrategy"]
    assert fit["name"] == "NodeResourcesFit" and strategy["type"] == "MostAllocated"
    weights = {r["name"]: r["weight"] for r in strategy["resources"]}
    assert weights["nvidia.com/gpu"] > weights["cpu"] == weights["memory"]


def test_the_documented_profile_is_the_one_binpack_runs() -> None:
    text = (REPO_ROOT / "docs" / "local-cluster.md").read_text(encoding="utf-8")
    section = text.split("### GPU packing", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "docs/local-cluster.md: the recommended profile's YAML block is gone"
    assert yaml.safe_load(block.group(1)) == [controlplane.binpack_profile()]


def test_the_command_line_offers_exactly_the_ways_of_scheduling() -> None:
    result = CliRunner().invoke(cli, ["cluster", "up", "--help"])
    assert result.exit_code == 0
    offered = re.search(r"--scheduling \[([a-z|]+)\]", result.output)
    assert offered and tuple(offered.group(1).split("|")) == controlplane.SCHEDULING


def test_an_unknown_way_of_scheduling_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one of spread, binpack"):
        controlplane.start(state_in(tmp_path), 1, False, (), "roundrobin")
    assert not (tmp_path / "logs").exists()
