"""lfk exec | chat: a command in a pod shaped like the training's, and a conversation with the served model."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from ..errors import LfkError
from .output import Failed
from .run_commands import cluster_options, target_of

if TYPE_CHECKING:
    from ..ops.chat import Conversation


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("spec")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--gpus", default=0, show_default=True, help="GPUs for the pod (the training's GPU type).")
@click.option("-i", "--interactive", is_flag=True, help="Pass this terminal's input to the command.")
@click.option("--start-timeout", default=600, show_default=True, help="Seconds the pod may take to start.")
@cluster_options
def exec_cmd(
    spec: str,
    command: tuple[str, ...],
    gpus: int,
    interactive: bool,
    start_timeout: int,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Run COMMAND once in a pod like the training's: its image, /storage, /config/train.yaml, Secrets and
    MLflow settings; no GPU unless --gpus. Output is streamed here; the exit code is the command's. E.g.
    `lfk exec SPEC -- llamafactory-cli env`."""
    from ..ops import oneoff

    if gpus < 0:
        raise click.BadParameter("cannot be negative", param_hint="--gpus")
    target = target_of(spec, kubeconfig, context, None)
    try:
        code = oneoff.exec_in_pod(
            target, target.spec.folder, list(command), gpus, interactive, click.echo, float(start_timeout)
        )
    except (LfkError, OSError) as exc:
        raise Failed(str(exc)) from None
    if code != 0:
        raise click.exceptions.Exit(code)


@click.command("chat")
@click.argument("spec")
@click.option(
    "-m",
    "--message",
    "messages",
    multiple=True,
    help="Send this turn and print the answer (repeat for several turns); without it, chat interactively.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="An image sent with the first turn (repeat for several), for a vision-language model.",
)
@click.option("--system", help="A system prompt, sent first.")
@click.option("--max-tokens", default=256, show_default=True)
@click.option("--temperature", default=0.7, show_default=True)
@click.option("--vllm-url", help="Ask this OpenAI API instead of port-forwarding to the vllm release.")
@click.option(
    "--api-key-env",
    default="VLLM_API_KEY",
    show_default=True,
    help="Environment variable with the API key; unset, the key is read from the spec's serve.apiKeySecret.",
)
@cluster_options
def chat_cmd(
    spec: str,
    messages: tuple[str, ...],
    images: tuple[str, ...],
    system: str | None,
    max_tokens: int,
    temperature: float,
    vllm_url: str | None,
    api_key_env: str,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Chat with the experiment's served model: a port-forward to vLLM, the served model's name and the API
    key filled in. Interactive: one line per turn, /reset forgets the conversation, /exit or Ctrl-D ends."""
    import contextlib

    from ..ops import chat

    attached = tuple(chat.image_content(path) for path in images) if images else ()
    target = target_of(spec, kubeconfig, context, None)
    served_name = target.facts.served_name
    if host := target.facts.serving_host:  # served by the host experiment's vLLM
        target = target_of(host.source, kubeconfig, context, None)
    elif "vllm" not in target.facts.releases:
        raise Failed(f"chat: serving is not enabled in experiment {target.facts.name}")
    try:
        api_key = os.environ.get(api_key_env) or (None if vllm_url else chat.api_key_of(target))
        if not vllm_url:
            chat.served_for_real(target)
        with contextlib.nullcontext(vllm_url) if vllm_url else chat.port_forward(target) as url:
            conversation = chat.Conversation(url.rstrip("/"), served_name, api_key, max_tokens, temperature)
            if system:
                conversation.messages.append({"role": "system", "content": system})
            if messages:
                for turn, text in enumerate(messages):
                    click.echo(f"> {text}")
                    click.echo(conversation.ask(text, images=attached if turn == 0 else ()))
                return
            _interactive(conversation, attached)
    except (LfkError, OSError) as exc:
        raise Failed(str(exc)) from None


def _interactive(conversation: Conversation, images: tuple[str, ...] = ()) -> None:
    tty = sys.stdin.isatty()
    if tty:
        click.echo(f"chatting with {conversation.model} at {conversation.url} (/reset, /exit or Ctrl-D)")
    while True:
        if tty:
            click.echo("> ", nl=False)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            conversation.reset()
            click.echo("(conversation forgotten)")
            continue
        try:
            click.echo(conversation.ask(text, images=images))
            images = ()  # sent with the first turn
        except LfkError as exc:  # one failed turn does not end the conversation
            click.secho(str(exc), fg="red", err=True)
