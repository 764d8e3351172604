"""Rules that keep credentials and remote code out: no literal secret anywhere in the spec, no
`--trust-remote-code` slipped into vLLM's extra arguments, no LlamaBoard Ingress without authentication."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..facts import Facts
from ..problems import Problem, json_path
from ..spec import Spec
from .registry import check

# ---------------------------------------------------------------------------------------- literal secrets
# Secrets reach the pods only as Secret references; a value written into the spec would land in the values
# files, the ConfigMaps and git. Every string of the spec is searched (a token pasted into a description
# counts too). Each pattern begins with a fixed prefix right after a non-word character and has single,
# non-overlapping quantifiers, so a search is linear in the length of the string.
_TOKEN_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?P<hub>hf_[A-Za-z0-9]{20,})"
    r"|sk-[A-Za-z0-9_-]{20,}"  # OpenAI-style API keys
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # a JWT
    r"|Bearer[ \t]+[A-Za-z0-9._~+/=-]{20,}"
    r")"
)
_PRIVATE_KEY = "PRIVATE KEY-----"
# LLaMA-Factory arguments (and any key named like them) that hold a credential, with the spec's way instead
_SECRET_ARGS = {
    "hf_hub_token": "model.hub.tokenSecret",
    "hub_token": "model.hub.tokenSecret",
    "ms_hub_token": "model.hub.tokenSecret",
    "om_hub_token": "model.hub.tokenSecret",
}
_SECRET_KEY_ENDINGS = ("token", "api_key", "apikey", "password", "passwd", "secret", "credentials")
# query parameters that carry a credential (?token=, &access_token=, password=, signed-URL signatures)
_SECRET_QUERY_KEYS = {
    "token", "access_token", "auth_token", "id_token", "refresh_token", "api_key", "apikey", "key",
    "password", "passwd", "pwd", "secret", "client_secret", "sig", "signature", "x-amz-signature",
    "x-amz-credential", "x-goog-signature",
}  # fmt: skip
# `vllm serve` flags that take a credential, with the spec's Secret reference for it
_SECRET_FLAGS = {"api-key": "serve.apiKeySecret", "hf-token": "model.hub.tokenSecret"}
_SECRET_REFS = (
    "model.hub.tokenSecret (hub tokens), serve.apiKeySecret (the serving API key), "
    "tracking.mlflow.credentialsSecret (MLflow)"
)


def _strings(value: Any, parts: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    """Every string of the tree (mapping keys too) with its path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield [*parts, str(k)], str(k)
            yield from _strings(v, [*parts, str(k)])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, [*parts, i])
    elif isinstance(value, str):
        yield parts, value


def _looks_random(token: str) -> bool:
    # real tokens mix letters and digits; words such as sk-learn-compatible-estimators do not
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def secret_in_text(text: str) -> str | None:
    """What kind of literal secret the text contains, or None: a token, a private key, or a URI carrying
    credentials (user info, or a credential in its query)."""
    for match in _TOKEN_IN_TEXT.finditer(text):
        if _looks_random(match.group()):
            return "hub token" if match.group("hub") else "a token"
    if _PRIVATE_KEY in text and "-----BEGIN " in text:
        return "a private key"
    return _uri_credentials(text)


def _uri_credentials(text: str) -> str | None:
    """The first URI in the text that carries credentials, described; None when there is none. Words are
    split on whitespace and each is parsed by urllib (no regex over the whole text)."""
    from urllib.parse import parse_qsl, urlsplit

    if "://" not in text:
        return None
    for word in text.split():
        at = word.find("://")
        if at <= 0:
            continue
        start = at
        while start > 0 and (word[start - 1].isalnum() or word[start - 1] in "+.-"):
            start -= 1
        try:
            parts = urlsplit(word[start:].strip("'\"()<>[],;"))
            query = parse_qsl(parts.query, keep_blank_values=False)
            password, user = parts.password, parts.username
        except ValueError:
            continue
        if password is not None:
            return "a URI with a user name and password"
        if user and user != "git":  # ssh://git@host is a fixed account name, not a credential
            return "a URI with user info (a user name or token before @)"
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in query):
            return "a URI with a credential in its query"
    return None


def _secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in _SECRET_ARGS or name.endswith(_SECRET_KEY_ENDINGS)


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("-").replace("_", "-").lower() if arg.startswith("--") else ""


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@check
def no_literal_secrets(spec: Spec, facts: Facts) -> Iterator[Problem]:
    reported: set[str] = set()  # one problem per place
    for key, value in _mapping(spec.raw.get("llamafactoryArgs")).items():
        if _secret_key(str(key)) and value not in (None, "", False):
            path = json_path(["llamafactoryArgs", str(key)])
            reported.add(path)
            field = _SECRET_ARGS.get(str(key).lower())
            yield Problem(
                path,
                f"{key} would write a credential into the training config (a ConfigMap, and git)",
                f"use {field} (a Secret reference)"
                if field
                else f"store it in a Secret; the spec references Secrets only through {_SECRET_REFS}",
            )
    args = _mapping(spec.raw.get("serve")).get("extraArgs")
    for i, arg in enumerate(args if isinstance(args, list) else []):
        flag = _flag_name(arg) if isinstance(arg, str) else ""
        if flag and (flag in _SECRET_FLAGS or flag.replace("-", "_").endswith(_SECRET_KEY_ENDINGS)):
            reported.add(json_path(["serve", "extraArgs", i]))
            if "=" not in arg:
                reported.add(json_path(["serve", "extraArgs", i + 1]))  # its value, the next argument
            field = _SECRET_FLAGS.get(flag)
            yield Problem(
                json_path(["serve", "extraArgs", i]),
                f"--{flag} would put a credential on the vLLM command line (in the pod spec, and git)",
                f"use {field} (a Secret reference)" if field else f"store it in a Secret: {_SECRET_REFS}",
            )
    for parts, value in _strings(spec.raw, []):
        found = secret_in_text(value)  # before the path: nearly every string holds none
        if found is None or (path := json_path(parts)) in reported:
            continue
        reported.add(path)
        mlflow = parts[:2] == ["tracking", "mlflow"]
        if found == "a URI with a user name and password" and mlflow:
            yield Problem(
                path, "the URI carries a user name and password", "use tracking.mlflow.credentialsSecret"
            )
        elif found == "hub token":
            yield Problem(
                path, "looks like a literal hub token", "use model.hub.tokenSecret (a Secret reference)"
            )
        else:
            yield Problem(
                path,
                f"looks like a literal secret: {found}",
                "use tracking.mlflow.credentialsSecret"
                if mlflow
                else f"store it in a Secret: {_SECRET_REFS}",
            )


@check
def serve_extra_args_not_managed(spec: Spec, facts: Facts) -> Iterator[Problem]:
    # remote code from the model repository would run inside the serving pod: only an explicit spec field
    # (reviewed as such) may ask for it
    for i, arg in enumerate(spec.data["serve"]["extraArgs"]):
        if _flag_name(arg) == "trust-remote-code":
            yield Problem(
                json_path(["serve", "extraArgs", i]),
                "--trust-remote-code runs Python code from the model repository inside the serving pod; "
                "it is not accepted in extraArgs",
                "set model.trustRemoteCode: true, which says so for training, merge and serving alike",
            )


@check
def webui_ingress_authenticates(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """LlamaBoard has no login: an Ingress in front of it must authenticate, one way."""
    webui = spec.data["webui"]
    ingress = webui.get("ingress")
    if not webui["enabled"] or ingress is None:
        return
    auth = ingress.get("auth", {})
    ways = [key for key in ("basicSecret", "url") if key in auth]
    if not ways:
        yield Problem(
            "$.webui.ingress.auth",
            "LlamaBoard has no login: an Ingress without authentication lets anyone who reaches it train, read "
            "the storage and use what the UI holds",
            "set auth.basicSecret (a Secret with an htpasswd file under `auth`) or auth.url (an authentication "
            "service such as an OAuth2 proxy)",
        )
    elif len(ways) > 1:
        yield Problem("$.webui.ingress.auth", "basicSecret and url are both set", "keep one of them")
    if "signin" in auth and "url" not in auth:
        yield Problem("$.webui.ingress.auth.signin", "signin goes with url", "set auth.url, or drop signin")
