"""Pareto fronts of (accuracy, latency) points: accuracy maximised, latency minimised. Non-dominated
sorting and the two-dimensional hypervolume, shared by the pruner, the report and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, latency): a is at least as accurate and as fast as b, and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def nondominated_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Front index of every point (0 = non-dominated), by repeated peeling."""
    ranks = [-1] * len(points)
    left, rank = set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    return [i for i, r in enumerate(nondominated_ranks(points)) if r == 0]


def near_front(points: Sequence[tuple[float, float]], margin: float, most: int) -> list[int]:
    """Up to ``most`` points off the front that could be on it within ``margin`` of accuracy: every point
    that dominates one is more accurate by at most ``margin`` (a single noisy run cannot tell them
    apart); the nearest first (the largest gap to a dominating point, smallest). ``margin`` 0: none."""
    if margin <= 0 or most < 1:
        return []
    on = set(pareto_front(points))
    gaps = {
        i: max(a[0] - b[0] for j, a in enumerate(points) if j != i and dominates(a, b))
        for i, b in enumerate(points)
        if i not in on
    }
    near = sorted((g, i) for i, g in gaps.items() if g <= margin)
    return [i for _, i in near[:most]]


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (maximise accuracy, minimise latency) and bounded by ``reference``
    = (worst accuracy, worst latency). Points beyond the reference contribute nothing."""
    pts = sorted({p for p in points if p[0] > reference[0] and p[1] < reference[1]}, key=lambda p: (p[1], -p[0]))
    # sweep by latency: each point that beats every faster one adds the strip between its accuracy and
    # theirs, from its latency to the reference latency
    area, best_acc = 0.0, reference[0]
    for acc, lat in pts:
        if acc > best_acc:
            area += (acc - best_acc) * (reference[1] - lat)
            best_acc = acc
    return area
