"""Soups to compare SoCE against: each candidate alone, the uniform soup, the greedy soup
(Wortsman et al. 2022), and SoCE with uniform weights over its experts.

Every soup is a weight vector over *all* candidates (zeros for those left out), so one
:class:`~paperlab.soup.memory.ExpertBank` holding every candidate serves them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from paperlab.soup.search import aggregate

Weights = tuple[float, ...]
ScoreFn = Callable[[Weights], dict[str, float]]


def one_hot(i: int, n: int) -> Weights:
    return tuple(1.0 if j == i else 0.0 for j in range(n))


def uniform_over(members: Sequence[int], n: int) -> Weights:
    """Equal weights on ``members``, zero elsewhere."""
    w = 1.0 / len(members)
    return tuple(w if j in members else 0.0 for j in range(n))


def greedy_soup(score: ScoreFn, n: int) -> tuple[Weights, list[str]]:
    """Wortsman et al.'s greedy soup: rank candidates by their own held-out score, then add each
    in turn to the running uniform average if the average's score does not drop.

    Returns:
        The soup's weights and a log of each decision.
    """
    alone = [(aggregate(score(one_hot(i, n))), i) for i in range(n)]
    order = [i for _, i in sorted(alone, key=lambda t: (-t[0], t[1]))]
    members = [order[0]]
    best = aggregate(score(uniform_over(members, n)))
    log = [f"start with candidate {order[0]} ({best:.2f})"]
    for i in order[1:]:
        trial = aggregate(score(uniform_over([*members, i], n)))
        if trial >= best:
            members.append(i)
            best = trial
            log.append(f"add candidate {i}: {trial:.2f}")
        else:
            log.append(f"skip candidate {i}: {trial:.2f} < {best:.2f}")
    return uniform_over(members, n), log
