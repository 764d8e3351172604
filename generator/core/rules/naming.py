"""Rules on the release names and the fine-tuning method (quantisation goes with qlora only)."""

from __future__ import annotations

from collections.abc import Iterator

from ..facts import Facts
from ..problems import Problem
from ..spec import Spec
from .registry import check

HELM_RELEASE_MAX = 53


@check
def release_names(spec: Spec, facts: Facts) -> Iterator[Problem]:
    longest = max(facts.releases.values(), key=len)
    if len(longest) > HELM_RELEASE_MAX:
        limit = HELM_RELEASE_MAX - (len(longest) - len(spec.name))
        yield Problem(
            "$.name",
            f"release name {longest} would be {len(longest)} characters; Helm allows {HELM_RELEASE_MAX}",
            f"shorten the name to at most {limit} characters",
        )


@check
def method_and_quantization(spec: Spec, facts: Facts) -> Iterator[Problem]:
    method = spec.data["method"]
    kind, quant = method["type"], method.get("quantization")
    if kind == "qlora" and not quant:
        yield Problem(
            "$.method.quantization", "qlora needs a quantised base model", "add quantization: {bits: 4}"
        )
    if kind != "qlora" and quant:
        fix = (
            "use method.type: qlora for LoRA on a quantised base"
            if kind == "lora"
            else "remove method.quantization"
        )
        yield Problem("$.method.quantization", f"quantization only works with qlora, not {kind}", fix)
    if quant:
        bits, library = quant["bits"], quant["method"]
        allowed = {"bitsandbytes": (4, 8), "eetq": (8,), "hqq": (2, 3, 4, 5, 6, 8)}[library]
        if bits not in allowed:
            yield Problem(
                "$.method.quantization.bits",
                f"{library} quantises to {' or '.join(map(str, allowed))} bits, not {bits}",
                f"use bits: {allowed[-1] if bits > allowed[-1] else allowed[0]} or another method",
            )
    if kind in ("full", "freeze", "oft") and "lora" in spec.raw.get("method", {}):
        yield Problem(
            "$.method.lora", f"LoRA settings are ignored for {kind} fine-tuning", severity="warning"
        )
    if kind != "oft" and "oft" in spec.raw.get("method", {}):
        yield Problem("$.method.oft", f"OFT settings are ignored for {kind} fine-tuning", severity="warning")
