"""Small iteration helpers shared by the stages."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` consecutive items (itertools.batched arrives in Python 3.12)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


K = TypeVar("K")


def first_seen(items: Iterable[T], seen: set[K], key: Callable[[T], K]) -> Iterator[T]:
    """The items whose key is not yet in ``seen``, adding each key as it passes."""
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            yield item


def interleave(groups: Iterable[Iterable[T]]) -> list[T]:
    """The groups' items taken in turn, one from each (so a limit keeps the mix)."""
    from itertools import chain, zip_longest

    missing = object()
    mixed = chain.from_iterable(zip_longest(*groups, fillvalue=missing))
    return [item for item in mixed if item is not missing]  # type: ignore[misc]
