"""Reading kubeconfig files as kubectl does (several files in KUBECONFIG merged, first one wins), and every
broken one refused with one line that names the file and what is wrong. No cluster is needed: the client is
only built, never used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.errors import KubeError
from generator.ops import kube

ROOT = Path(__file__).resolve().parents[2]
CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="  # base64 of a PEM header: enough to be read as data


def config(
    clusters: dict[str, dict[str, Any]],
    contexts: dict[str, dict[str, Any]],
    users: dict[str, dict[str, Any]] | None = None,
    current: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
        "users": [{"name": n, "user": u} for n, u in (users or {}).items()],
    }
    if current:
        doc["current-context"] = current
    return doc


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def good(server: str = "https://a.example:6443") -> dict[str, Any]:
    return config(
        {"a": {"server": server, "certificate-authority-data": CA}},
        {"a": {"cluster": "a", "user": "alice"}},
        {"alice": {"token": "t"}},
        current="a",
    )


def refusal(kubeconfig: str | None = None, context: str | None = None) -> str:
    with pytest.raises(KubeError) as info:
        kube.client(kubeconfig, context)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_good_kubeconfig_gives_a_client_for_its_current_context(tmp_path: Path) -> None:
    api = kube.client(str(write(tmp_path / "config", good())))
    assert api.url == "https://a.example:6443"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("clusters: [a\n", "not valid YAML at line 2"),
        ("- just\n- a list\n", "not a kubeconfig"),
        ("clusters: {a: 1}\n", "clusters must be a list"),
        ("clusters: [{cluster: {server: x}}]\n", "clusters[0] has no name"),
        (b"current-context: caf\xe9\n", "not UTF-8: byte 0xe9 at offset 20"),
    ],
)
def test_an_unreadable_kubeconfig_is_one_line_naming_the_file(
    tmp_path: Path, text: str | bytes, says: str
) -> None:
    path = tmp_path / "config"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    message = refusal(str(path))
    assert message.startswith(f"kubeconfig {path}: ")
    assert says in message


def test_a_kubeconfig_without_clusters_names_the_missing_cluster(tmp_path: Path) -> None:
    path = write(tmp_path / "config", config({}, {"a": {"cluster": "a"}}, current="a"))
    assert refusal(str(path)) == f"kubeconfig {path}: context 'a' names cluster 'a', which is not there"


def test_a_missing_context_lists_the_ones_there(tmp_path: Path) -> None:
    path = write(tmp_path / "config", good())
    assert refusal(str(path), "prod") == f"kubeconfig {path}: no context 'prod' (contexts: a)"


def test_no_current_context_and_none_given(tmp_path: Path) -> None:
    doc = good()
    del doc["current-context"]
    path = write(tmp_path / "config", doc)
    assert "no current-context set and no --context given" in refusal(str(path))


def test_a_missing_user_is_named(tmp_path: Path) -> None:
    doc = good()
    doc["users"] = []
    path = write(tmp_path / "config", doc)
    assert refusal(str(path)) == f"kubeconfig {path}: context 'a' names user 'alice', which is not there"


def test_a_missing_ca_file_is_named_with_its_resolved_path(tmp_path: Path) -> None:
    doc = good()
    doc["clusters"][0]["cluster"] = {
        "server": "https://a.example:6443",
        "certificate-authority": "certs/ca.crt",
    }
    path = write(tmp_path / "config", doc)
    message = refusal(str(path))
    assert message == (
        f"kubeconfig {path}: cluster 'a': certificate-authority {tmp_path / 'certs' / 'ca.crt'} does not exist"
    )


def test_a_relative_ca_file_is_found_beside_its_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    doc = good()
    doc["clusters"][0]["cluster"] = {
        "server": "https://a.example:6443",
        "certificate-authority": "certs/ca.crt",
    }
    path = write(tmp_path / "config", doc)
    monkeypatch.chdir(ROOT)  # not where the kubeconfig is
    assert kube.client(str(path)).url == "https://a.example:6443"


def test_bad_base64_data_is_named(tmp_path: Path) -> None:
    doc = good()
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = "not base64!"
    path = write(tmp_path / "config", doc)
    assert "certificate-authority-data is not base64" in refusal(str(path))


def test_a_named_kubeconfig_that_does_not_exist(tmp_path: Path) -> None:
    assert refusal(str(tmp_path / "nope")) == f"kubeconfig {tmp_path / 'nope'}: no such file"


# ------------------------------------------------------------------------------- KUBECONFIG with several files


def test_kubeconfig_files_are_merged_first_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the first file sets no current-context: the second one's is used; cluster `a` is defined by both
    first = config({"a": {"server": "https://first.example"}}, {"a": {"cluster": "a"}})
    second = config(
        {"a": {"server": "https://second.example"}, "b": {"server": "https://b.example"}},
        {"a": {"cluster": "b"}, "b": {"cluster": "b"}},
        current="a",
    )
    third = config({}, {}, current="b")
    files = [
        write(tmp_path / "1", first),
        tmp_path / "missing",
        write(tmp_path / "2", second),
        write(tmp_path / "3", third),
    ]
    monkeypatch.setenv("KUBECONFIG", ":".join(str(f) for f in files))
    # context `a` is the first file's (cluster a), and cluster a is the first file's server
    assert kube.client().url == "https://first.example"
    assert kube.client(context="b").url == "https://b.example"
    assert kube.kubeconfig_files() == [tmp_path / "1", tmp_path / "2", tmp_path / "3"]


def test_an_error_names_the_file_the_entry_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = good()
    second = config(
        {"b": {"server": "https://b.example", "certificate-authority": "ca.crt"}}, {"b": {"cluster": "b"}}
    )
    monkeypatch.setenv("KUBECONFIG", f"{write(tmp_path / '1', first)}:{write(tmp_path / '2', second)}")
    assert (
        refusal(context="b")
        == f"kubeconfig {tmp_path / '2'}: cluster 'b': certificate-authority {tmp_path / 'ca.crt'} does not exist"
    )


def test_a_broken_second_file_is_still_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = write(tmp_path / "2", "users: [\n")
    monkeypatch.setenv("KUBECONFIG", f"{write(tmp_path / '1', good())}:{broken}")
    assert refusal().startswith(f"kubeconfig {tmp_path / '2'}: not valid YAML")


def test_no_file_of_kubeconfig_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'x'}:{tmp_path / 'y'}")
    assert "none of the files in KUBECONFIG exists" in refusal()


# ------------------------------------------------------------------------------------------------- the CLI


def test_an_ops_command_with_a_broken_kubeconfig_exits_1_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config", "clusters: [a\n")
    spec = ROOT / "tests" / "cases" / "valid" / "minimal-defaults" / "experiment.yaml"
    result = CliRunner().invoke(cli, ["status", str(spec), "--kubeconfig", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"kubeconfig {path}: not valid YAML" in result.output
