"""LlamaBoard has no login: what the generator gives the web UI by default, and the Ingress it may sit behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.core.render import render
from generator.core.rules import validate
from generator.core.spec import Spec
from tests.support.specs import spec_with


def spec_of(extra: str, folder: Path) -> Spec:
    return spec_with({"name": "board", **yaml.safe_load(extra)}, folder / "experiment.yaml")


def errors_of(extra: str, folder: Path) -> list[str]:
    return [f"{p.path}: {p.message}" for p in validate(spec_of(extra, folder)) if p.severity == "error"]


def webui_values(extra: str, folder: Path) -> dict[str, Any]:
    [webui] = [r for r in render(spec_of(extra, folder), folder) if r.component == "webui"]
    values: dict[str, Any] = yaml.safe_load(webui.text)
    return values


def test_the_web_ui_gets_no_credentials_and_no_gpu_unless_the_spec_asks(tmp_path: Path) -> None:
    values = webui_values("webui: {}", tmp_path)
    assert values["webui"]["credentials"] is False
    assert values["webui"]["gpu"]["count"] == 0
    asked = webui_values("webui: {credentials: true, resources: {gpus: 1}}", tmp_path)
    assert asked["webui"]["credentials"] is True
    assert asked["webui"]["gpu"]["count"] == 1


def test_an_ingress_without_authentication_is_refused(tmp_path: Path) -> None:
    assert errors_of("webui: {ingress: {host: lb.example.com}}", tmp_path) == [
        "$.webui.ingress.auth: LlamaBoard has no login: an Ingress without authentication lets anyone who "
        "reaches it train, read the storage and use what the UI holds"
    ]


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        (
            "{basicSecret: htpasswd, url: 'https://auth.example.com/check'}",
            "$.webui.ingress.auth: basicSecret and url",
        ),
        (
            "{basicSecret: htpasswd, signin: 'https://auth.example.com/start'}",
            "$.webui.ingress.auth.signin: signin",
        ),
    ],
)
def test_an_ingress_authenticates_one_way(auth: str, problem: str, tmp_path: Path) -> None:
    [error] = errors_of(f"webui: {{ingress: {{host: lb.example.com, auth: {auth}}}}}", tmp_path)
    assert error.startswith(problem)


def test_an_authenticated_ingress_renders_with_its_controller_let_in(tmp_path: Path) -> None:
    extra = (
        "webui: {ingress: {host: lb.example.com, controllerNamespace: edge,"
        " auth: {url: 'https://auth.example.com/check', signin: 'https://auth.example.com/start?rd=$escaped_request_uri'}}}"
    )
    assert errors_of(extra, tmp_path) == []
    values = webui_values(extra, tmp_path)
    assert values["webui"]["ingress"] == {
        "enabled": True,
        "className": "nginx",
        "host": "lb.example.com",
        "auth": {
            "type": "url",
            "url": "https://auth.example.com/check",
            "signin": "https://auth.example.com/start?rd=$escaped_request_uri",
        },
    }
    assert values["networkPolicy"]["webui"]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}}
    ]


def test_a_web_ui_that_is_off_needs_no_authentication(tmp_path: Path) -> None:
    assert errors_of("webui: {enabled: false, ingress: {host: lb.example.com}}", tmp_path) == []
