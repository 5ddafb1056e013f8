"""Read-only JSON values: an execution's input and its steps' outputs.

They are what the audit trail pins and what every later step reads, and they are shared:
between the orchestrator's copy of an execution, the copies it hands to callers and
callbacks, and the steps' contexts. A change made in place by any of them would steer the
rest of the run away from what was stored (and what a replay after a crash would read),
so in-place changes are refused. They are still a dict and a list to every reader,
`json.dumps` and `==` included.
"""

from __future__ import annotations

from typing import Any, NoReturn


def _refuse(*_: object, **__: object) -> NoReturn:
    raise TypeError(
        "an execution's input and step outputs are read-only; copy them to change"
        " (copy.deepcopy gives plain dicts and lists)"
    )


class FrozenDict(dict[str, Any]):
    __slots__ = ("__weakref__",)  # so that what is worked out from one can go with it
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    # A copy is made to be changed: copy.copy gives a plain dict (what it holds is shared,
    # and stays read-only, as a shallow copy's would), copy.deepcopy plain dicts and lists.
    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {k: thawed(v) for k, v in self.items()}

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return FrozenDict, (dict(self),)


class FrozenList(list[Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = _refuse
    clear = sort = reverse = __iadd__ = __imul__ = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [thawed(v) for v in self]

    def __reduce__(self) -> tuple[type, tuple[list[Any]]]:
        return FrozenList, (list(self),)


def read_only(value: Any) -> Any:
    """`value` with every mapping and list in it read-only (already frozen parts are kept)."""
    if isinstance(value, FrozenDict | FrozenList):
        return value
    if isinstance(value, dict):
        return FrozenDict({k: read_only(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList(read_only(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """`value` with every mapping and list in it a plain, changeable dict or list."""
    if isinstance(value, dict):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thawed(v) for v in value]
    return value
