"""How long work shows its progress: a callable given the items it will go through, whose
context hands them back as they are done (a progress bar's, or as they are)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

Progress = Callable[[list[str]], AbstractContextManager[Iterable[str]]]


@contextmanager
def quietly(items: list[str]) -> Iterator[Iterable[str]]:
    yield items
