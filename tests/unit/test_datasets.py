"""LLaMA-Factory's data rules on real files, and dataset_info.json registration. (The llamafactory tier
proves the counts agree with LLaMA-Factory's own loader.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.checks import datasets
from generator.cli import cli


def write(folder: Path, name: str, rows: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_alpaca_report_counts_drops_and_previews(tmp_path: Path) -> None:
    rows = [
        {"instruction": "q", "input": "ctx", "output": "a"},
        {"instruction": "q2", "input": ""},
        {"instruction": "q3", "input": "", "output": 7},
    ]
    report = datasets.check(write(tmp_path, "d.json", rows), datasets.Attrs())
    assert (report.total, report.valid) == (3, 1)
    assert report.dropped == [
        (1, "response (output) is missing"),
        (2, "response (output) is a int, not text"),
    ]
    assert report.first == [{"role": "user", "content": "q\nctx"}, {"role": "assistant", "content": "a"}]


def test_jsonl_and_csv_are_read(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(
        '{"instruction": "q", "input": "", "output": "a"}\n\n{"instruction": "r", "input": "", "output": "b"}\n'
    )
    assert datasets.check(tmp_path / "d.jsonl", datasets.Attrs()).valid == 2
    (tmp_path / "d.csv").write_text("instruction,input,output\nq,,a\n")
    assert datasets.check(tmp_path / "d.csv", datasets.Attrs()).valid == 1


def test_a_column_missing_everywhere_stops_llamafactory(tmp_path: Path) -> None:
    with pytest.raises(datasets.DataError, match="no example has the query column 'input'"):
        datasets.check(write(tmp_path, "d.json", [{"instruction": "q", "output": "a"}]), datasets.Attrs())


def test_given_columns_replace_every_default(tmp_path: Path) -> None:
    attrs = datasets.Attrs.of_entry({"columns": {"prompt": "question", "response": "answer"}})
    assert attrs.column("query") is None and attrs.column("messages") is None
    report = datasets.check(write(tmp_path, "d.json", [{"question": "q", "answer": "a"}]), attrs)
    assert report.valid == 1


def test_alpaca_system_field_is_noted_when_not_mapped(tmp_path: Path) -> None:
    report = datasets.check(
        write(tmp_path, "d.json", [{"instruction": "q", "input": "", "output": "a", "system": "s"}]),
        datasets.Attrs(),
    )
    assert report.valid == 1 and any("system" in n for n in report.notes)


def test_sharegpt_roles_order_count_system_and_tools(tmp_path: Path) -> None:
    def m(role: str) -> dict[str, str]:
        return {"from": role, "value": "x"}

    rows = [
        {"conversations": [m("system"), m("human"), m("gpt")]},
        {"conversations": [m("human"), m("function_call"), m("observation"), m("gpt")]},
        {"conversations": [m("gpt"), m("human")]},
        {"conversations": [m("human"), m("gpt"), m("human")]},
        {"conversations": []},
    ]
    rows[1]["conversations"][1]["value"] = '{"name": "search", "arguments": {"q": "x"}}'
    report = datasets.check(write(tmp_path, "c.json", rows), datasets.Attrs("sharegpt"))
    assert report.valid == 2
    assert [i for i, _ in report.dropped] == [2, 3, 4]
    assert report.dropped[0][1] == "turn 0 has role 'gpt', expected 'human' or 'observation'"
    assert report.first[0] == {"role": "system", "content": "x"}


def test_sharegpt_custom_tags_without_system_tag_drop_a_leading_system_message(tmp_path: Path) -> None:
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    rows = [
        {
            "conversations": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        }
    ]
    report = datasets.check(
        write(tmp_path, "c.json", rows), datasets.Attrs.of_entry({"formatting": "sharegpt", "tags": tags})
    )
    assert report.valid == 0 and "needs tags: {system_tag: ...}" in report.dropped[0][1]


def test_a_function_call_that_is_not_json_is_fatal(tmp_path: Path) -> None:
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "x"},
                {"from": "function_call", "value": "call it"},
                {"from": "observation", "value": "r"},
                {"from": "gpt", "value": "y"},
            ]
        }
    ]
    report = datasets.check(write(tmp_path, "c.json", rows), datasets.Attrs("sharegpt"))
    assert report.fatal and "Invalid JSON format in function message" in report.fatal[0][1]


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(datasets.DataError, match="not valid JSON"):
        datasets.check(tmp_path / "bad.json", datasets.Attrs())
    with pytest.raises(datasets.DataError, match="unsupported file type"):
        datasets.check(tmp_path / "d.xlsx", datasets.Attrs())
    with pytest.raises(datasets.DataError, match="list of objects"):
        datasets.check(write(tmp_path, "o.json", [1, 2]), datasets.Attrs())


def test_register_adds_updates_and_keeps_other_entries(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"first": {"file_name": "f.json"}, "second": {"hf_hub_url": "x/y"}})
    )
    assert datasets.register(
        tmp_path, "mine", datasets.entry_for("m.json", "sharegpt", {"messages": "conversations"}, None)
    )
    assert not datasets.register(
        tmp_path, "mine", datasets.entry_for("m.json", "sharegpt", {"messages": "conversations"}, None)
    )
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert list(info) == ["first", "second", "mine"]
    assert info["mine"] == {
        "file_name": "m.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json"]


def test_cli_validate_never_rewrites_and_exits_by_result(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", [{"instruction": "q", "input": "", "output": "a"}])
    bad = write(
        tmp_path,
        "bad.json",
        [{"instruction": "q", "input": "", "output": "a"}, {"instruction": "q", "input": ""}],
    )
    before = bad.read_bytes()
    ok = CliRunner().invoke(cli, ["data", "validate", str(good)])
    assert (
        ok.exit_code == 0
        and "1 examples (alpaca): 1 valid, 0 dropped" in ok.output
        and "user: q" in ok.output
    )
    result = CliRunner().invoke(cli, ["data", "validate", str(bad)])
    assert result.exit_code == 1 and "dropped example 1: response (output) is missing" in result.output
    assert bad.read_bytes() == before
    custom = write(tmp_path, "qa.json", [{"question": "q", "answer": "a"}])
    assert (
        CliRunner()
        .invoke(cli, ["data", "validate", str(custom), "--columns", "prompt=question,response=answer"])
        .exit_code
        == 0
    )
    assert CliRunner().invoke(cli, ["data", "validate", str(custom), "--columns", "prompt"]).exit_code == 2


def test_cli_register_refuses_a_file_with_no_usable_example(tmp_path: Path) -> None:
    write(tmp_path, "none.json", [{"instruction": "q", "input": "", "output": None}])
    result = CliRunner().invoke(cli, ["data", "register", str(tmp_path), "none", "none.json"])
    assert result.exit_code == 1 and "not registered: no usable example" in result.output
    assert not (tmp_path / "dataset_info.json").exists()


def test_cli_sync_registers_the_specs_entries(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "qa_dataset.json", [{"instruction": "q", "input": "", "output": "a"}])
    spec = Path(__file__).resolve().parents[2] / "values" / "llama31-qa" / "experiment.yaml"
    result = CliRunner().invoke(cli, ["data", "sync", str(spec), "--storage-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "data" / "dataset_info.json").read_text()) == {
        "qa_dataset": {"file_name": "qa_dataset.json", "formatting": "alpaca"}
    }


def _spec_with_entry(folder: Path, file: str, data_dir: str = "/storage/data") -> Path:
    spec = folder / "exp" / "experiment.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        "name: exp\nstorage: {existingClaim: llm-storage}\nmodel: {path: /storage/models/llama-3.1-8b-instruct}\n"
        f"data: {{dir: {data_dir}, datasets: [qa], register: {{qa: {{file: {file}}}}}}}\n"
    )
    return spec


def test_cli_sync_refuses_a_symlink_leading_out_of_the_storage(tmp_path: Path) -> None:
    """A file on the storage that links elsewhere would be read here and registered for the pods."""
    (tmp_path / "outside").mkdir()
    outside = write(tmp_path / "outside", "secret.json", [{"instruction": "q", "input": "", "output": "a"}])
    storage = tmp_path / "storage"
    (storage / "data").mkdir(parents=True)
    (storage / "data" / "qa.json").symlink_to(outside)
    spec = _spec_with_entry(tmp_path, "qa.json")
    result = CliRunner().invoke(cli, ["data", "sync", str(spec), "--storage-root", str(storage)])
    assert result.exit_code == 1, result.output
    assert "outside" in result.output and "Traceback" not in result.output
    assert not (storage / "data" / "dataset_info.json").exists()


def test_cli_sync_refuses_a_dataset_directory_linked_out_of_the_storage(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "elsewhere", "qa.json", [{"instruction": "q", "input": "", "output": "a"}])
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "data").symlink_to(tmp_path / "elsewhere")
    spec = _spec_with_entry(tmp_path, "qa.json")
    result = CliRunner().invoke(cli, ["data", "sync", str(spec), "--storage-root", str(storage)])
    assert result.exit_code == 1 and "outside the storage root" in result.output, result.output
    assert not (tmp_path / "elsewhere" / "dataset_info.json").exists()


def test_cli_sync_follows_links_that_stay_on_the_storage(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    (storage / "data").mkdir(parents=True)
    (storage / "raw").mkdir()
    write(storage / "raw", "qa.json", [{"instruction": "q", "input": "", "output": "a"}])
    (storage / "data" / "qa.json").symlink_to(storage / "raw" / "qa.json")
    spec = _spec_with_entry(tmp_path, "qa.json")
    result = CliRunner().invoke(cli, ["data", "sync", str(spec), "--storage-root", str(storage)])
    assert result.exit_code == 0, result.output
    assert json.loads((storage / "data" / "dataset_info.json").read_text())["qa"]["file_name"] == "qa.json"


@pytest.mark.parametrize("file", ["/etc/hostname", "../outside.json", "sub/../../outside.json"])
def test_cli_register_refuses_a_file_outside_the_dataset_directory(file: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path, "outside.json", [{"instruction": "q", "input": "", "output": "a"}])
    result = CliRunner().invoke(cli, ["data", "register", str(tmp_path / "data"), "qa", file])
    assert result.exit_code == 1 and "relative to the dataset directory" in result.output, result.output
    assert not (tmp_path / "data" / "dataset_info.json").exists()


def test_a_registered_entry_naming_a_file_off_the_storage_is_a_problem_not_a_read(tmp_path: Path) -> None:
    """dataset_info.json on the storage is written by anyone: the deep check reads only what lies on it."""
    from generator.checks.storage import storage_problems
    from generator.core.spec import load_spec

    write(tmp_path, "secret.json", [{"instruction": "q", "input": "", "output": "a"}])
    storage = tmp_path / "storage"
    (storage / "data").mkdir(parents=True)
    (storage / "data" / "dataset_info.json").write_text(
        json.dumps({"qa": {"file_name": "../../secret.json"}})
    )
    spec = load_spec(_spec_with_entry(tmp_path, "qa.json"))
    found = [(p.path, p.message) for p in storage_problems(spec, storage)]
    assert [m for path, m in found if path == "$.data.datasets[0]" and "without `..`" in m], found


# ---------------------------------------------------------------------------------------- per stage
PAIRS = [
    {"instruction": "q", "chosen": "good", "rejected": "bad"},
    {"instruction": "q2", "chosen": "good", "rejected": None},
]
PAIR_ENTRY = {
    "ranking": True,
    "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"},
}
TAGGED = [
    {"instruction": "q", "output": "a", "label": True},
    {"instruction": "q2", "output": "b", "label": "yes"},
]
TAG_ENTRY = {"columns": {"prompt": "instruction", "response": "output", "kto_tag": "label"}}


def test_pairs_are_for_dpo_and_rm_and_refused_elsewhere(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.json", PAIRS)
    attrs = datasets.Attrs.of_entry(PAIR_ENTRY)
    for stage in ("dpo", "rm"):
        report = datasets.check(path, attrs, stage)
        assert (report.total, report.valid) == (2, 1)
        assert report.dropped == [(1, "chosen (chosen) and rejected (rejected) are not both text")]
    for stage in ("sft", "kto", "pt", "ppo"):
        with pytest.raises(datasets.DataError, match=f"ranking: true.*stage {stage} cannot train on them"):
            datasets.check(path, attrs, stage)


def test_dpo_refuses_data_that_is_not_pairwise_naming_what_it_lacks(tmp_path: Path) -> None:
    path = write(tmp_path, "sft.json", [{"instruction": "q", "output": "a"}])
    with pytest.raises(
        datasets.DataError, match="stage dpo trains on pairs of a chosen and a rejected answer"
    ):
        datasets.check(path, datasets.Attrs(), "dpo")
    no_columns = datasets.Attrs.of_entry({"ranking": True})
    with pytest.raises(datasets.DataError, match="names its chosen and rejected columns"):
        datasets.check(path, no_columns, "dpo")


def test_kto_needs_a_boolean_tag_and_sft_drops_tagged_answers(tmp_path: Path) -> None:
    path = write(tmp_path, "tagged.json", TAGGED)
    attrs = datasets.Attrs.of_entry(TAG_ENTRY)
    report = datasets.check(path, attrs, "kto")
    assert report.dropped == [(1, "kto_tag (label) is not true or false")]
    sft = datasets.check(path, attrs, "sft")
    assert sft.dropped == [(0, "a tagged answer where supervised fine-tuning takes one")]
    with pytest.raises(datasets.DataError, match="stage kto needs each answer tagged"):
        datasets.check(
            write(tmp_path, "plain.json", [{"instruction": "q", "output": "a"}]), datasets.Attrs(), "kto"
        )


def test_pretraining_and_ppo_need_no_answer(tmp_path: Path) -> None:
    path = write(tmp_path, "text.json", [{"text": "raw text"}, {"text": "more"}])
    attrs = datasets.Attrs.of_entry({"columns": {"prompt": "text"}})
    for stage in ("pt", "ppo"):
        report = datasets.check(path, attrs, stage)
        assert (report.total, report.valid, report.notes) == (2, 2, [])
    assert datasets.check(path, attrs, "sft").valid == 0


def test_sharegpt_pairs_end_with_the_users_turn(tmp_path: Path) -> None:
    rows = [
        {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"},
         "rejected": {"from": "gpt", "value": "bad"}},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
         "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}},
        {"conversations": [{"from": "human", "value": "q"}], "chosen": "good",
         "rejected": {"from": "gpt", "value": "bad"}},
    ]  # fmt: skip
    entry = {"formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}  # fmt: skip
    report = datasets.check(write(tmp_path, "pairs.json", rows), datasets.Attrs.of_entry(entry), "dpo")
    assert report.valid == 1
    assert report.dropped[0][0] == 1 and "ends with the user's turn" in report.dropped[0][1]
    assert report.dropped[1] == (2, "chosen (chosen) and rejected (rejected) are not both messages")


def test_cli_validates_for_a_stage_and_registers_a_pairwise_entry(tmp_path: Path) -> None:
    write(tmp_path, "pairs.json", PAIRS[:1])
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "validate", str(tmp_path / "pairs.json"), "--ranking",
                                 "--columns", "chosen=chosen,rejected=rejected"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 valid, 0 dropped" in result.output
    result = runner.invoke(cli, ["data", "validate", str(tmp_path / "pairs.json"), "--ranking", "--stage", "sft",
                                 "--columns", "chosen=chosen,rejected=rejected"])  # fmt: skip
    assert result.exit_code == 1 and "stage sft cannot train on them" in result.output
    result = runner.invoke(cli, ["data", "register", str(tmp_path), "prefs", "pairs.json", "--ranking",
                                 "--columns", "chosen=chosen,rejected=rejected"])  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["prefs"]["ranking"] is True


# ---------------------------------------------------------------------------------------- media
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_every_image_is_opened_and_matched_to_its_placeholder(tmp_path: Path) -> None:
    """Images: as many files as <image> placeholders, each in the media folder and an image; LLaMA-Factory
    stops on anything else, so each is fatal, counted, and the usable files are reported."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(PNG)
    (tmp_path / "img" / "b.png").write_bytes(PNG)
    (tmp_path / "img" / "text.png").write_text("not an image")
    rows = [
        {"instruction": "<image>What is on it?", "output": "a cat", "images": ["img/a.png"]},
        {"instruction": "<image><image>Compare.", "output": "same", "images": ["img/a.png", "img/b.png"]},
        {"instruction": "<image>And this?", "output": "?", "images": ["img/missing.png"]},
        {"instruction": "<image>This?", "output": "?", "images": ["img/text.png"]},
        {"instruction": "No placeholder.", "output": "?", "images": ["img/a.png"]},
    ]
    attrs = datasets.Attrs.of_entry(
        {"columns": {"prompt": "instruction", "response": "output", "images": "images"}}
    )
    report = datasets.check(write(tmp_path, "vision.json", rows), attrs)
    assert report.media == {"images": 3}
    assert [index for index, _ in report.fatal] == [2, 3, 4]
    assert "img/missing.png is not in" in report.fatal[0][1]
    assert "is not an image PIL opens" in report.fatal[1][1]
    assert report.fatal[2][1].startswith("1 images but 0 <image> in its text")
    assert "media files opened and usable: 3 images" in report.notes


def test_media_are_looked_for_in_the_media_folder_given(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.wav").write_bytes(b"RIFF0000WAVE")
    rows = [{"conversations": [{"from": "human", "value": "<audio>Transcribe."}, {"from": "gpt", "value": "hi"}],
             "audios": "clip.wav"}]  # fmt: skip
    attrs = datasets.Attrs.of_entry(
        {"formatting": "sharegpt", "columns": {"messages": "conversations", "audios": "audios"}}
    )
    path = write(tmp_path, "speech.json", rows)
    assert datasets.check(path, attrs).fatal[0][1].startswith("audios: clip.wav is not in")
    assert datasets.check(path, attrs, media_dir=media).media == {"audios": 1}
    result = CliRunner().invoke(cli, ["data", "validate", str(path), "--format", "sharegpt", "--columns",
                                      "messages=conversations,audios=audios", "--media-dir", str(media)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "media files opened and usable: 1 audios" in result.output


def source_package(folder: Path, files: dict[str, object]) -> Path:
    """A llamafactory source package as PyPI serves it (llamafactory-0.9.5/data/...), holding files."""
    import io
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    package = folder / "llamafactory-0.9.5.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        for name, content in files.items():
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            member = tarfile.TarInfo(f"llamafactory-0.9.5/data/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return package


def test_cli_sync_bundled_copies_llamafactorys_demo_files_the_storage_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the source package in the cache (pip is not asked when it is there): the file of each bundled set
    the spec registers, once, never over a file of the same name already on the storage; then registered."""
    from generator.core import bundled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rows = [{"instruction": "who are you?", "input": "", "output": "a model"}]
    package = source_package(
        tmp_path / "cache" / "llamafactory-k8s" / "llamafactory-source",
        {"dataset_info.json": {"identity": {"file_name": "identity.json"}, "alpaca_en": {"hf_hub_url": "x/y"}},
         "identity.json": rows},
    )  # fmt: skip
    # the package's own list: the sets whose file it holds (alpaca_en downloads from a hub)
    assert bundled.from_source_package(package) == {"identity": {"file": "identity.json", "format": "alpaca"}}
    spec = tmp_path / "exp" / "experiment.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: exp\nstorage: {existingClaim: llm-storage}\nmodel: {path: /storage/models/llama-3.1-8b-instruct}\n"
        "data: {datasets: [identity], register: {identity: {file: identity.json}}}\n"
    )
    storage = tmp_path / "storage"
    storage.mkdir()
    sync = ["data", "sync", str(spec), "--storage-root", str(storage), "--bundled"]
    result = CliRunner().invoke(cli, sync)
    assert result.exit_code == 0, result.output
    assert (
        f"{storage / 'data' / 'identity.json'}: copied identity from llamafactory-0.9.5.tar.gz"
        in result.output
    )
    assert json.loads((storage / "data" / "identity.json").read_text()) == rows
    assert json.loads((storage / "data" / "dataset_info.json").read_text()) == {
        "identity": {"file_name": "identity.json", "formatting": "alpaca"}
    }
    # the team's own identity.json is kept
    write(storage / "data", "identity.json", [{"instruction": "q", "input": "", "output": "ours"}])
    again = CliRunner().invoke(cli, sync)
    assert again.exit_code == 0 and "bundled demo sets identity: already on the storage" in again.output
    assert "ours" in (storage / "data" / "identity.json").read_text()
    # a package without the file: said, nothing registered
    (storage / "data" / "identity.json").unlink()
    (storage / "data" / "dataset_info.json").unlink()
    source_package(package.parent, {"dataset_info.json": {}})
    missing = CliRunner().invoke(cli, sync)
    assert (
        missing.exit_code == 1 and "bundled demo sets: no data/identity.json in the package" in missing.output
    )
    assert not (storage / "data" / "dataset_info.json").exists()


def test_cli_sync_bundled_copies_the_pictures_a_multimodal_demo_set_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mllm_demo's rows name pictures in data/mllm_demo_data/: they come along, and the set's media check
    (every picture opened) passes."""
    import io

    from PIL import Image

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(picture, "PNG")
    rows = [
        {"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "red"}],
         "images": ["mllm_demo_data/1.png"]},
    ]  # fmt: skip
    source_package(
        tmp_path / "cache" / "llamafactory-k8s" / "llamafactory-source",
        {"mllm_demo.json": rows, "mllm_demo_data/1.png": picture.getvalue()},
    )
    spec = tmp_path / "exp" / "experiment.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: exp\nstorage: {existingClaim: llm-storage}\nmodel: {path: /storage/models/qwen2-vl-2b-instruct, "
        "template: qwen2_vl}\ndata:\n  datasets: [mllm_demo]\n  register:\n    mllm_demo: {file: mllm_demo.json, "
        "format: sharegpt, columns: {messages: messages, images: images}, tags: {role_tag: role, content_tag: "
        "content, user_tag: user, assistant_tag: assistant}}\n"
    )
    storage = tmp_path / "storage"
    storage.mkdir()
    result = CliRunner().invoke(cli, ["data", "sync", str(spec), "--storage-root", str(storage), "--bundled"])
    assert result.exit_code == 0, result.output
    assert f"{storage / 'data'}: copied the 1 media files mllm_demo names" in result.output
    assert (storage / "data" / "mllm_demo_data" / "1.png").read_bytes() == picture.getvalue()
    assert "mllm_demo" in json.loads((storage / "data" / "dataset_info.json").read_text())
