"""The bitstring task suite: ~30 primitive functions on 8-bit strings and a seeded generator.

A task is a hidden function f: {0,1}^8 -> {0,1}^8. Bits are tuples of 0/1 ints, index 0 is the
leftmost symbol as written in a prompt. Primitives live in six families:

- ``bitwise``: per-position logic (identity, NOT, fixed XOR masks, neighbour XOR);
- ``structural``: rearrangements that keep every bit (reverse, rotations, shifts, swaps);
- ``positional``: masking and selection by position (zero the evens, keep a half, broadcast);
- ``pattern``: detectors that mark where (or whether) a local pattern occurs;
- ``aggregation``: whole-string statistics (parity, majority, popcount, sorting, prefix XOR);
- ``arithmetic`` (our sixth family): the string read as an unsigned big-endian byte
  (increment, decrement, Gray code, two's-complement negation), all modulo 256.

:func:`generate_functions` draws a reproducible suite of ``n`` distinct functions: every
primitive once, then two-step compositions ``g(f(x))`` until ``n`` is reached, rejecting
compositions whose truth table duplicates one already drawn or is constant (a constant output
is solved by the mode baseline and says nothing about in-context learning).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product

from paperlab.errors import ICLError

Bits = tuple[int, ...]
N_BITS = 8
FAMILIES = ("bitwise", "structural", "positional", "pattern", "aggregation", "arithmetic")


def to_bits(text: str) -> Bits:
    """Parse a string of '0'/'1' characters into bits."""
    if not text or any(c not in "01" for c in text):
        raise ICLError(f"not a bitstring: {text!r}; use only the characters 0 and 1")
    return tuple(int(c) for c in text)


def to_str(bits: Sequence[int]) -> str:
    """Render bits as a '0'/'1' string."""
    return "".join(str(b) for b in bits)


def _int(x: Bits) -> int:
    return int(to_str(x), 2)


def _from_int(v: int) -> Bits:
    return tuple(int(c) for c in format(v % (1 << N_BITS), f"0{N_BITS}b"))


def _xor_mask(x: Bits, mask: str) -> Bits:
    return tuple(b ^ int(m) for b, m in zip(x, mask, strict=True))


def _broadcast(bit: int) -> Bits:
    return (int(bit),) * N_BITS


# -- bitwise ------------------------------------------------------------------------------------
def identity(x: Bits) -> Bits:
    return tuple(x)


def bit_not(x: Bits) -> Bits:
    return tuple(1 - b for b in x)


def flip_even(x: Bits) -> Bits:
    """XOR with 10101010: flip positions 0, 2, 4, 6."""
    return _xor_mask(x, "10101010")


def flip_last_half(x: Bits) -> Bits:
    """XOR with 00001111."""
    return _xor_mask(x, "00001111")


def xor_neighbor(x: Bits) -> Bits:
    """out[i] = x[i] XOR x[i+1], cyclically."""
    return tuple(x[i] ^ x[(i + 1) % N_BITS] for i in range(N_BITS))


def or_reverse(x: Bits) -> Bits:
    """out[i] = x[i] OR x[7-i]: a palindrome covering every set bit."""
    return tuple(a | b for a, b in zip(x, reversed(x), strict=True))


# -- structural ---------------------------------------------------------------------------------
def reverse(x: Bits) -> Bits:
    return tuple(reversed(x))


def rotate_left(x: Bits) -> Bits:
    return tuple(x[1:]) + (x[0],)


def rotate_right(x: Bits) -> Bits:
    return (x[-1],) + tuple(x[:-1])


def shift_left(x: Bits) -> Bits:
    """Drop the first bit, append a 0."""
    return tuple(x[1:]) + (0,)


def shift_right(x: Bits) -> Bits:
    """Prepend a 0, drop the last bit."""
    return (0,) + tuple(x[:-1])


def swap_halves(x: Bits) -> Bits:
    return tuple(x[4:]) + tuple(x[:4])


def swap_pairs(x: Bits) -> Bits:
    """Swap bits 0<->1, 2<->3, 4<->5, 6<->7."""
    return tuple(x[i ^ 1] for i in range(N_BITS))


# -- positional ---------------------------------------------------------------------------------
def zero_even(x: Bits) -> Bits:
    """Zero positions 0, 2, 4, 6; keep the odd positions."""
    return tuple(b if i % 2 else 0 for i, b in enumerate(x))


def keep_first_half(x: Bits) -> Bits:
    return tuple(x[:4]) + (0,) * 4


def keep_last_half(x: Bits) -> Bits:
    return (0,) * 4 + tuple(x[4:])


def repeat_first_half(x: Bits) -> Bits:
    return tuple(x[:4]) * 2


def broadcast_first(x: Bits) -> Bits:
    return _broadcast(x[0])


# -- pattern detection --------------------------------------------------------------------------
def mark_11(x: Bits) -> Bits:
    """out[i] = 1 where a '11' starts at i (the last position is always 0)."""
    return tuple(x[i] & x[i + 1] for i in range(N_BITS - 1)) + (0,)


def mark_run_starts(x: Bits) -> Bits:
    """out[i] = 1 where a run of 1s starts."""
    return tuple(int(x[i] == 1 and (i == 0 or x[i - 1] == 0)) for i in range(N_BITS))


def mark_equal_neighbors(x: Bits) -> Bits:
    """out[i] = 1 where x[i] == x[i+1] (the last position is always 0)."""
    return tuple(int(x[i] == x[i + 1]) for i in range(N_BITS - 1)) + (0,)


def is_palindrome(x: Bits) -> Bits:
    """All 1s if the string reads the same reversed, else all 0s."""
    return _broadcast(tuple(x) == tuple(reversed(x)))


def has_000(x: Bits) -> Bits:
    """All 1s if the string contains three 0s in a row, else all 0s."""
    return _broadcast("000" in to_str(x))


# -- aggregation --------------------------------------------------------------------------------
def parity(x: Bits) -> Bits:
    """All bits = XOR of the input (1 for an odd number of 1s)."""
    return _broadcast(sum(x) % 2)


def majority(x: Bits) -> Bits:
    """All bits = 1 if more than half are 1 (a 4-4 tie gives 0)."""
    return _broadcast(sum(x) > N_BITS // 2)


def popcount(x: Bits) -> Bits:
    """The number of 1s as an 8-bit big-endian binary number."""
    return _from_int(sum(x))


def sort_bits(x: Bits) -> Bits:
    """All 1s first: the popcount in unary."""
    k = sum(x)
    return (1,) * k + (0,) * (N_BITS - k)


def prefix_xor(x: Bits) -> Bits:
    """Running parity: out[i] = x[0] XOR ... XOR x[i]."""
    out, acc = [], 0
    for b in x:
        acc ^= b
        out.append(acc)
    return tuple(out)


# -- arithmetic (our sixth family) --------------------------------------------------------------
def increment(x: Bits) -> Bits:
    return _from_int(_int(x) + 1)


def decrement(x: Bits) -> Bits:
    return _from_int(_int(x) - 1)


def gray_code(x: Bits) -> Bits:
    """Binary-reflected Gray code: v XOR (v >> 1)."""
    v = _int(x)
    return _from_int(v ^ (v >> 1))


def negate(x: Bits) -> Bits:
    """Two's-complement negation modulo 256."""
    return _from_int(-_int(x))


PRIMITIVES: dict[str, tuple[str, Callable[[Bits], Bits]]] = {
    "identity": ("bitwise", identity),
    "not": ("bitwise", bit_not),
    "flip_even": ("bitwise", flip_even),
    "flip_last_half": ("bitwise", flip_last_half),
    "xor_neighbor": ("bitwise", xor_neighbor),
    "or_reverse": ("bitwise", or_reverse),
    "reverse": ("structural", reverse),
    "rotate_left": ("structural", rotate_left),
    "rotate_right": ("structural", rotate_right),
    "shift_left": ("structural", shift_left),
    "shift_right": ("structural", shift_right),
    "swap_halves": ("structural", swap_halves),
    "swap_pairs": ("structural", swap_pairs),
    "zero_even": ("positional", zero_even),
    "keep_first_half": ("positional", keep_first_half),
    "keep_last_half": ("positional", keep_last_half),
    "repeat_first_half": ("positional", repeat_first_half),
    "broadcast_first": ("positional", broadcast_first),
    "mark_11": ("pattern", mark_11),
    "mark_run_starts": ("pattern", mark_run_starts),
    "mark_equal_neighbors": ("pattern", mark_equal_neighbors),
    "is_palindrome": ("pattern", is_palindrome),
    "has_000": ("pattern", has_000),
    "parity": ("aggregation", parity),
    "majority": ("aggregation", majority),
    "popcount": ("aggregation", popcount),
    "sort_bits": ("aggregation", sort_bits),
    "prefix_xor": ("aggregation", prefix_xor),
    "increment": ("arithmetic", increment),
    "decrement": ("arithmetic", decrement),
    "gray_code": ("arithmetic", gray_code),
    "negate": ("arithmetic", negate),
}

ALL_INPUTS: tuple[Bits, ...] = tuple(product((0, 1), repeat=N_BITS))


@dataclass(frozen=True)
class TaskFunction:
    """One hidden function of the suite.

    Attributes:
        name: the primitive's name, or ``"g∘f"`` style ``"f>g"`` for a composition (f first).
        family: the primitive's family, or ``"composition"``.
        parts: the primitive names applied in order.
    """

    name: str
    family: str
    parts: tuple[str, ...]
    table: tuple[Bits, ...] = field(repr=False, compare=False, default=())

    def __call__(self, x: Bits) -> Bits:
        return self.table[_int(tuple(x))]


def make_function(parts: Sequence[str]) -> TaskFunction:
    """Build the function applying the named primitives left to right.

    Raises:
        ICLError: a name is not a primitive (the message lists them).
    """
    for p in parts:
        if p not in PRIMITIVES:
            raise ICLError(f"unknown primitive {p!r}; choose from: {', '.join(PRIMITIVES)}")
    if not parts:
        raise ICLError("a task function needs at least one primitive")
    table = []
    for x in ALL_INPUTS:
        y = x
        for p in parts:
            y = PRIMITIVES[p][1](y)
        table.append(y)
    family = PRIMITIVES[parts[0]][0] if len(parts) == 1 else "composition"
    return TaskFunction(name=">".join(parts), family=family, parts=tuple(parts), table=tuple(table))


def primitive_functions() -> list[TaskFunction]:
    """Every primitive as a one-step function, in registry order."""
    return [make_function([p]) for p in PRIMITIVES]


def generate_functions(n: int = 100, seed: int = 0) -> list[TaskFunction]:
    """Draw ``n`` distinct functions: all primitives, then two-step compositions.

    The draw depends only on ``(n, seed)``. With ``n`` below the number of primitives a seeded
    subset of primitives is returned. Compositions are rejected when constant or when their
    truth table equals one already in the suite (e.g. ``not>not`` = identity).

    Raises:
        ICLError: ``n`` is not positive.
    """
    if n <= 0:
        raise ICLError(f"the number of functions must be positive, got {n}")
    rng = random.Random(seed)
    prims = primitive_functions()
    if n <= len(prims):
        return sorted(rng.sample(prims, n), key=lambda f: list(PRIMITIVES).index(f.parts[0]))
    suite = list(prims)
    seen = {f.table for f in suite}
    names = list(PRIMITIVES)
    pairs = [(a, b) for a in names for b in names if a != b]
    rng.shuffle(pairs)
    for a, b in pairs:
        if len(suite) == n:
            break
        f = make_function([a, b])
        if f.table in seen or len(set(f.table)) == 1:
            continue
        seen.add(f.table)
        suite.append(f)
    return suite


def get_function(name: str) -> TaskFunction:
    """Rebuild a function from its name (``"reverse"`` or ``"not>reverse"``)."""
    return make_function(name.split(">"))
