"""Literal secrets in a spec are refused wherever they sit, with the spec's Secret reference as the fix; and
every pattern the generator applies to what a person wrote runs in linear time."""

from __future__ import annotations

import functools
import json
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.core import catalog
from generator.core.rules import paths as path_rules
from generator.core.rules import secret_in_text, validate
from generator.core.rules import security as security_rules
from generator.core.spec import Spec
from generator.project import SPEC_SCHEMA
from tests.support.specs import BASE, spec_with

# built from pieces, so that this file holds no string a scanner would take for a real token
HF_TOKEN = "hf_" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
OPENAI_KEY = "sk-" + "proj-4fA9xQ2mB7nC1vD8eF3gH6jK0lM5"


def spec_of(extra: dict[str, Any]) -> Spec:
    return spec_with(extra)


def secret_problems(extra: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (p.path, p.message, p.hint)
        for p in validate(spec_of(extra))
        if "secret" in p.message or "credential" in p.message or "token" in p.message
    ]


# ------------------------------------------------------------------------------------------ finding them


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"see {HF_TOKEN} for access", "hub token"),
        (f"key={OPENAI_KEY}", "a token"),
        ("Authorization: Bearer " + "eyJ0eXAiOiJKV1Qi" + "LCJhbGciOiJIUzI1NiJ9xx", "a token"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=", "a private key"),
        ("https://alice:s3cret@mlflow.example.com", "a URI with a user name and password"),
        (
            "clone https://ghtoken@github.example.com/org/repo",
            "a URI with user info (a user name or token before @)",
        ),
        ("http://mlflow.mlops:5000/?token=abc123", "a URI with a credential in its query"),
        ("http://mlflow.mlops:5000/api?x=1&access_token=abc123", "a URI with a credential in its query"),
        ("postgresql://db.internal/mlflow?password=hunter2", "a URI with a credential in its query"),
    ],
)
def test_a_secret_inside_text_is_found(text: str, kind: str) -> None:
    assert secret_in_text(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "Q&A assistant on the guide's qa_dataset, LoRA on Llama-3.1-8B-Instruct",
        "uses sk-learn-compatible-preprocessing-steps",  # a word, not a key: no digit in it
        "http://mlflow.mlops:5000",
        "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct?revision=main",
        "Bearer tokens are sent by the client",
        "/storage/models/hf_models/llama",
        "ssh://git@github.com/org/repo",
    ],
)
def test_ordinary_text_is_not_taken_for_a_secret(text: str) -> None:
    assert secret_in_text(text) is None


def test_a_token_in_the_description_is_refused() -> None:
    assert secret_problems({"description": f"ask ops; token {HF_TOKEN} works"}) == [
        ("$.description", "looks like a literal hub token", "use model.hub.tokenSecret (a Secret reference)")
    ]


@pytest.mark.parametrize("key", ["hub_token", "hf_hub_token", "ms_hub_token"])
def test_hub_token_arguments_point_to_the_model_hub_secret(key: str) -> None:
    found = secret_problems({"llamafactoryArgs": {key: "anything"}})
    assert [(path, hint) for path, _, hint in found] == [
        (f"$.llamafactoryArgs.{key}", "use model.hub.tokenSecret (a Secret reference)")
    ]


def test_a_swanlab_key_is_refused_and_the_secret_references_named() -> None:
    [(path, message, hint)] = secret_problems({"llamafactoryArgs": {"swanlab_api_key": "abc"}})
    assert path == "$.llamafactoryArgs.swanlab_api_key"
    assert "credential" in message
    assert "model.hub.tokenSecret" in hint and "serve.apiKeySecret" in hint


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["--api-key", "plain-text-key"], "$.serve.extraArgs[0]"),
        (["--enable-prefix-caching", "--api-key=plain-text-key"], "$.serve.extraArgs[1]"),
        (["--api_key", "plain-text-key"], "$.serve.extraArgs[0]"),
    ],
)
def test_an_api_key_in_serve_extra_args_points_to_api_key_secret(args: list[str], path: str) -> None:
    found = secret_problems({"serve": {"extraArgs": args}})
    assert [(p, hint) for p, _, hint in found] == [(path, "use serve.apiKeySecret (a Secret reference)")]


def test_a_token_in_the_tracking_uri_query_points_to_mlflow_credentials() -> None:
    uri = "https://mlflow.example.com/?token=abc123"
    found = secret_problems({"tracking": {"mlflow": {"trackingUri": uri}}})
    assert found == [
        (
            "$.tracking.mlflow.trackingUri",
            "looks like a literal secret: a URI with a credential in its query",
            "use tracking.mlflow.credentialsSecret",
        )
    ]


def test_user_info_in_a_uri_elsewhere_is_refused() -> None:
    found = secret_problems({"serve": {"extraArgs": ["--download-dir", "s3://AKEY@bucket.example.com/m"]}})
    assert [p for p, _, _ in found] == ["$.serve.extraArgs[1]"]


@pytest.mark.parametrize("arg", ["--trust-remote-code", "--trust_remote_code", "--trust-remote-code=true"])
def test_trust_remote_code_is_not_accepted_in_serve_extra_args(arg: str) -> None:
    found = [(p.path, p.message, p.hint) for p in validate(spec_of({"serve": {"extraArgs": [arg]}}))]
    [(path, message, hint)] = [f for f in found if "trust-remote-code" in f[1]]
    assert path == "$.serve.extraArgs[0]"
    assert "runs Python code from the model repository inside the serving pod" in message
    assert hint.startswith("set model.trustRemoteCode: true")


def test_the_spec_field_for_remote_code_is_still_accepted() -> None:
    model = {**yaml.safe_load(BASE)["model"], "trustRemoteCode": True}
    assert [p for p in validate(spec_of({"model": model})) if p.severity == "error"] == []


# ----------------------------------------------------------------------------- linear time on hostile input

BUDGET_S = 5  # generous: a linear scan of 1 MB takes milliseconds, a quadratic one hours


class TooSlow(Exception):
    pass


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Interrupts the block (the regex engine checks for signals) once the budget is spent."""

    def expire(signum: int, frame: object) -> None:
        raise TooSlow(f"still running after {seconds} s: not linear")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


MB = 1 << 20


@functools.cache
def adversarial() -> dict[str, str]:
    """1 MB strings built to make backtracking patterns blow up: long runs that almost match."""
    return {
        "letters": "a" * MB,
        "digits": "1" * MB,
        "colons after a scheme": "a://" + ":" * MB,
        "user info without end": "http://" + "u:" * (MB // 2),
        "schemes": "a:/" * (MB // 3),
        "hub prefixes": "hf_" * (MB // 3),
        "key prefixes": " sk-" * (MB // 4),
        "bearer spaces": "Bearer" + " " * MB,
        "jwt-like": ("eyJ" + "a" * 9 + ".") * (MB // 13),
        "dots and digits": "1." * (MB // 2),
        "dashes": "a-" * (MB // 2),
        "at signs": "a@" * (MB // 2),
        "query": "http://h/?" + "token&" * (MB // 6),
        "private key headers": "-----BEGIN " * (MB // 11),
    }


def schema_patterns() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(Path(SPEC_SCHEMA).read_text(encoding="utf-8")))
    return sorted(set(found))


def user_input_checks() -> dict[str, Callable[[str], object]]:
    checks: dict[str, Callable[[str], object]] = {
        "secret_in_text": secret_in_text,
        "gpu_memory_gib": catalog.gpu_memory_gib,
        "size_from_name": catalog.size_from_name,
        "family_template": catalog.family_template,
        "path argument suffix": path_rules.PATH_ARG_SUFFIX.search,
    }
    for pattern in schema_patterns():  # jsonschema applies them with re.search
        checks[f"schema pattern {pattern}"] = re.compile(pattern).search
    return checks


CHECKS = user_input_checks()  # once: the parameters and the test bodies see the same schema


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_check_of_user_text_is_linear_on_one_megabyte(name: str) -> None:
    check = CHECKS[name]
    for label, text in adversarial().items():
        try:
            with time_budget(BUDGET_S):
                check(text)
        except TooSlow:
            pytest.fail(f"{name} on {label!r}: still running after {BUDGET_S} s")


def test_the_whole_secret_rule_is_linear_on_a_one_megabyte_description() -> None:
    for label, text in adversarial().items():
        spec = Spec(source="experiment.yaml", raw={"description": text}, data={})
        try:
            with time_budget(BUDGET_S):
                list(security_rules.no_literal_secrets(spec, None))  # type: ignore[arg-type]
        except TooSlow:
            pytest.fail(f"no_literal_secrets on {label!r}: still running after {BUDGET_S} s")
