"""Encodings: how bits and field separators become symbols in a prompt.

An :class:`EncodingScheme` is a rule for drawing a :class:`Mapping` (the concrete symbols of one
prompt) from a seeded RNG. Every prompt draws its own mapping, and the mapping is recorded with
its results, so a model cannot rely on a fixed symbol meaning "1".

- ``nucleotide``: 0 and 1 become two distinct random bases out of A/C/G/T and a third random base
  separates the fields (input | output | next example), as in the paper.
- ``digit``: 0 and 1 become two distinct random digits; ``,`` separates input from output and a
  newline ends an example. (For SmolLM2 every digit, ``,`` and newline is one token.)
- ``alphabet:SYMBOLS``: a user-supplied alphabet; 0 and 1 become two distinct symbols of it and
  the separators are ``,`` and a newline, as for digits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from paperlab.errors import ICLError


@dataclass(frozen=True)
class Mapping:
    """The concrete symbols of one prompt."""

    zero: str
    one: str
    field_sep: str
    example_sep: str

    def encode(self, bits: Sequence[int]) -> str:
        """Render bits with this mapping's two symbols."""
        return "".join(self.one if b else self.zero for b in bits)

    def decode(self, text: str) -> tuple[int, ...]:
        """Read symbols back into bits.

        Raises:
            ICLError: a character is neither the zero nor the one symbol.
        """
        out = []
        for ch in text:
            if ch == self.zero:
                out.append(0)
            elif ch == self.one:
                out.append(1)
            else:
                raise ICLError(f"symbol {ch!r} is not in this mapping ({self.zero!r}/{self.one!r})")
        return tuple(out)

    def describe(self) -> str:
        """A compact record, e.g. ``0=A 1=T sep=G``."""
        seps = repr(self.field_sep) if self.field_sep == self.example_sep else (
            f"{self.field_sep!r}/{self.example_sep!r}"
        )
        return f"0={self.zero} 1={self.one} sep={seps}"


@dataclass(frozen=True)
class EncodingScheme:
    """A rule for drawing mappings.

    Attributes:
        name: the spec string that selects it.
        pool: the symbols bits are drawn from.
        sep_from_pool: draw one more distinct pool symbol as the (single) separator.
        field_sep, example_sep: fixed separators when ``sep_from_pool`` is false.
    """

    name: str
    pool: str
    sep_from_pool: bool = False
    field_sep: str = ","
    example_sep: str = "\n"

    def draw(self, rng: random.Random) -> Mapping:
        """Draw this prompt's mapping from ``rng``."""
        if self.sep_from_pool:
            zero, one, sep = rng.sample(self.pool, 3)
            return Mapping(zero, one, sep, sep)
        zero, one = rng.sample(self.pool, 2)
        return Mapping(zero, one, self.field_sep, self.example_sep)

    @property
    def symbols(self) -> str:
        """Every character a prompt under this scheme can contain."""
        extra = "" if self.sep_from_pool else self.field_sep + self.example_sep
        return self.pool + extra


ENCODINGS: dict[str, EncodingScheme] = {
    "nucleotide": EncodingScheme("nucleotide", "ACGT", sep_from_pool=True),
    "digit": EncodingScheme("digit", "0123456789"),
}


def get_encoding(spec: str) -> EncodingScheme:
    """Resolve ``nucleotide``, ``digit`` or ``alphabet:SYMBOLS``.

    Raises:
        ICLError: unknown name, or an alphabet with fewer than two distinct symbols or one that
            contains a separator character.
    """
    if spec in ENCODINGS:
        return ENCODINGS[spec]
    if spec.startswith("alphabet:"):
        pool = spec.split(":", 1)[1]
        if len(set(pool)) != len(pool) or len(pool) < 2:
            raise ICLError(
                f"alphabet {pool!r} needs at least two distinct symbols, each once (e.g. alphabet:xyz)"
            )
        if "," in pool or "\n" in pool:
            raise ICLError("an alphabet may not contain ',' or a newline: they are the separators")
        return EncodingScheme(spec, pool)
    raise ICLError(
        f"unknown encoding {spec!r}; choose from: {', '.join(ENCODINGS)}, alphabet:SYMBOLS"
    )
