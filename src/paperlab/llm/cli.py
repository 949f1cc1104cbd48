"""``paperlab llm``: talk to any configured model from the shell (generate, score)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Shared model access: generate or score with any backend spec.",
                  no_args_is_help=True)

SpecOpt = Annotated[str, typer.Option("--llm", help="smollm2 | hf:<path>[#<file.gguf>] | openai:<base_url>#<model>")]


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    llm: SpecOpt = "smollm2",
    chat: Annotated[bool, typer.Option(help="Send as one user chat message (chat template).")] = True,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request (openai backend).")] = 60.0,
    retries: Annotated[int, typer.Option(help="Retries on transient HTTP failures.")] = 3,
) -> None:
    """Generate a completion and print it."""
    from paperlab.llm import Message, Prompt, load_llm
    from paperlab.threads import set_threads

    set_threads()
    opts = {"timeout": timeout, "max_retries": retries} if llm.startswith("openai:") else {}
    model = load_llm(llm, **opts)
    p: Prompt = [Message(role="user", content=prompt)] if chat else prompt
    g = model.generate(p, max_tokens=max_tokens, temperature=temperature)
    typer.echo(g.text)


@app.command()
def score(
    prompt: Annotated[str, typer.Argument(help="The raw prompt text.")],
    continuations: Annotated[list[str], typer.Argument(help="Continuations to score.")],
    llm: SpecOpt = "smollm2",
) -> None:
    """Print log P(continuation | prompt) for each continuation as JSON lines."""
    from paperlab.llm import load_llm
    from paperlab.threads import set_threads

    set_threads()
    for s in load_llm(llm).score(prompt, continuations):
        typer.echo(json.dumps({"continuation": s.continuation, "logprob": s.logprob, "n_tokens": s.n_tokens}))
