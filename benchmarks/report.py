"""The figure table the benchmarks print before their JSON line."""

from __future__ import annotations

from collections.abc import Mapping


def print_table(
    figures: Mapping[str, float], targets: Mapping[str, tuple[str, float]], width: int = 28
) -> None:
    """One line per figure: its value and, when it has one, its target and the verdict."""
    print(f"{'figure':<{width}}{'value':>14}  target")
    for name, value in figures.items():
        target = targets.get(name)
        if target is None:
            verdict = ""
        else:
            sign, limit = target
            ok = value >= limit if sign == ">=" else value <= limit
            verdict = f"{sign} {limit:,}  {'ok' if ok else 'MISSED'}"
        print(f"{name:<{width}}{value:>14,.1f}  {verdict}")
