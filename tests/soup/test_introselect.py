"""The sort replay against torch's own CPU sort: the set of the first k entries must be the one
``torch.argsort(descending=True)`` gives (mergekit's call), ties included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from paperlab.soup.methods import introselect, sparsify


def argsort_first(keys: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros(keys.numel(), dtype=torch.bool)
    mask[torch.argsort(keys, descending=True)[:k]] = True
    return mask


def bf16_deltas(n: int, g: torch.Generator) -> torch.Tensor:
    """|x - b| of two bf16 tensors: few distinct values, ties straddling every cut."""
    a = (torch.randn(n, generator=g) * 0.01).bfloat16().float()
    b = (torch.randn(n, generator=g) * 0.01).bfloat16().float()
    return (a - b).abs()


KEYS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "bf16 deltas": bf16_deltas,
    "distinct": lambda n, g: torch.randn(n, generator=g).abs(),
    "five values": lambda n, g: torch.randint(0, 5, (n,), generator=g).float(),
    "all equal": lambda n, g: torch.zeros(n),
    "sorted": lambda n, g: torch.arange(n, dtype=torch.float32),
    "reversed": lambda n, g: torch.arange(n, 0, -1, dtype=torch.float32),
}


def test_the_replay_is_checked_against_this_torch() -> None:
    assert introselect.replay_matches_torch()


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize("n", [1, 2, 16, 17, 18, 33, 257, 4097, 65_537, 300_001])
def test_the_replay_keeps_what_torch_sort_puts_first(kind: str, n: int) -> None:
    keys = KEYS[kind](n, torch.Generator().manual_seed(n))
    for k in sorted({1, max(1, n // 10), max(1, n // 2), max(1, n - 1), n}):
        got = introselect.replay_top_k_mask(keys.clone(), k)
        assert got is not None
        assert torch.equal(got, argsort_first(keys, k)), (kind, n, k)


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize("n", [17, 18, 257, 4097, 65_537, 300_001])
def test_the_band_replay_keeps_what_torch_sort_puts_between_two_positions(kind: str, n: int) -> None:
    """One replay for both boundaries (breadcrumbs): positions [k1, k2) of argsort; None only
    where the first partition leaves both boundaries on one side."""
    keys = KEYS[kind](n, torch.Generator().manual_seed(n + 1))
    order = torch.argsort(keys, descending=True)
    replayed = 0
    for k1, k2 in {(1, n - 1), (n // 3, n - 1), (n // 2 - 1, n // 2 + 1), (n // 10, n // 2), (n // 2, n - n // 10)}:
        got = introselect.replay_band_mask(keys.clone(), k1, k2)
        if got is None:
            continue
        replayed += 1
        want = torch.zeros(n, dtype=torch.bool)
        want[order[k1:k2]] = True
        assert torch.equal(got, want), (kind, n, k1, k2)
    assert replayed >= 1


def test_nan_keys_are_handed_back_untouched() -> None:
    keys = torch.tensor([1.0, float("nan"), 3.0] * 10)
    before = keys.clone()
    assert introselect.replay_top_k_mask(keys, 5) is None
    assert torch.equal(keys.isnan(), before.isnan()) and torch.equal(keys.nan_to_num(), before.nan_to_num())


def test_top_k_mask_falls_back_to_the_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the replay does not apply, the keys are made again and sorted: same mask."""
    keys = bf16_deltas(5000, torch.Generator().manual_seed(1))
    want = argsort_first(keys, 1234)
    def gives_up(keys: torch.Tensor, k: int) -> None:  # after permuting the keys, as a depth fallback does
        keys.copy_(keys.flip(0))

    monkeypatch.setattr(introselect, "replay_top_k_mask", gives_up)
    assert torch.equal(sparsify.top_k_mask(keys.clone(), 1234, keys.clone, select_first=False), want)
    monkeypatch.setattr(introselect, "_MATCHES_TORCH", False)
    assert torch.equal(sparsify.top_k_mask(keys.clone(), 1234, keys.clone, select_first=False), want)


def test_spares_hand_back_only_small_whole_tensors() -> None:
    from paperlab.soup.methods.spares import Spares

    spares = Spares(limit=100)
    a = spares.take(64, torch.float32)
    spares.give(a)
    assert spares.take(64, torch.float32) is a  # same size and dtype: the same storage again
    assert spares.take(64, torch.float32) is not a  # it was taken: a fresh one
    spares.give(a)
    assert spares.take(64, torch.bool) is not a  # another dtype
    spares.give(torch.empty(200))  # over the limit: not kept
    spares.give(torch.empty(128)[64:])  # a view into a larger storage: not kept
    assert [t.numel() for ts in spares._free.values() for t in ts] == [64]  # only a
    spares.clear()
    assert spares.take(64, torch.float32) is not a


@pytest.mark.parametrize("n", [17, 1000, 65_537])
@pytest.mark.parametrize("density,gamma", [(0.5, 0.01), (0.9, 0.05), (0.1, 0.0), (0.3, 0.9)])
def test_breadcrumbs_keeps_the_band_of_mergekits_ascending_sort(n: int, density: float, gamma: float) -> None:
    delta = (torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.01).bfloat16()
    delta = delta - (torch.randn(n, generator=torch.Generator().manual_seed(n + 1)) * 0.01).bfloat16()
    target = int(density * n)
    bottom = max(0, n - target - int(gamma * n))
    order = torch.sort(delta.abs().float(), descending=False).indices
    want = torch.zeros(n, dtype=delta.dtype)
    want[order[bottom: bottom + target]] = 1
    got = sparsify.magnitude_outliers(delta.clone(), density, gamma)
    assert torch.equal(got, delta * want)


def test_della_ranks_equal_mergekits_argsort_of_argsort() -> None:
    """DELLA's drop probabilities come from each entry's rank in its row; the rank is scattered
    from one stable sort instead of sorting twice: the same integers, ties included."""
    g = torch.Generator().manual_seed(3)
    delta = (torch.randn(64, 300, generator=g) * 0.01).bfloat16().float()  # many ties
    want_rank = torch.argsort(torch.argsort(delta.abs(), dim=1, stable=True), dim=1).to(torch.float32)
    probs = 0.4 + want_rank / 299 * (2 * 0.1)
    u = torch.rand(delta.numel(), generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    want = delta.reshape(-1) * (u < probs.reshape(-1)).float()
    got = sparsify.della_magprune(delta.reshape(-1).clone(), (64, 300), 0.5, 0.1,
                                  torch.Generator().manual_seed(9), rescale=False)
    assert torch.equal(got, want)
