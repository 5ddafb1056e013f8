"""Your own workflows, named by the `workflows` setting (`module:attribute`), for the CLI.

A service hands its registry to `Overrides(workflows=...)`; the `govkernel` command has no
code of yours to do that, so it imports what the setting names. The attribute is one of:
- a `WorkflowDefinition`, or a list or tuple of them;
- a mapping of name to `WorkflowDefinition` (each under its own name);
- a function (a `def` or a lambda) returning any of the above, called with the wired
  `KnowledgeService` if it takes an argument.
Every reference is imported when the app opens, before the store is; what they give is
added to the built-in workflows, and replaces a built-in one of the same name.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from composition.settings import ConfigurationError, Problem, Settings
from domain.model.validation import one_line
from domain.orchestration.definition import WorkflowDefinition
from domain.services.knowledge import KnowledgeService

Registry = Callable[[KnowledgeService], Mapping[str, WorkflowDefinition]]
Retired = Callable[[KnowledgeService], Sequence[WorkflowDefinition]]


def registry(settings: Settings, built_in: Registry) -> Registry | None:
    """The built-in workflows and those the settings name, or None when they name none.
    Raises ConfigurationError naming each reference that cannot be used."""
    found = _found(settings, "workflows")
    if found is None:
        return None
    source = settings.sources.get("workflows", "workflows")

    def workflows(service: KnowledgeService) -> Mapping[str, WorkflowDefinition]:
        problems: list[Problem] = []
        causes: list[BaseException] = []
        out = dict(built_in(service))
        named: dict[str, str] = {}
        for spec, definitions in _given(found, service, source, problems, causes):
            for definition in definitions:
                original = out.get(definition.name)
                if (
                    definition.name not in named
                    and original is not None
                    and original.version == definition.version
                    and original.shape() != definition.shape()
                ):
                    # Its executions would be resumed with other steps than they started with.
                    problems.append(
                        Problem(
                            "workflows",
                            source,
                            f"{spec}: workflow {definition.name!r} version {definition.version!r}"
                            " is built in: give yours another name or version",
                        )
                    )
                if definition.name in named:
                    where = named[definition.name]
                    again = "more than once" if where == spec else f"also by {where}"
                    problems.append(
                        Problem(
                            "workflows",
                            source,
                            f"{spec}: gives workflow {definition.name!r} {again}; the command"
                            " starts one version of a workflow (name earlier versions in"
                            " retired_workflows, GOVKERNEL_RETIRED_WORKFLOWS)",
                        )
                    )
                named[definition.name] = spec
                out[definition.name] = definition
        if problems:
            _refuse(problems, causes)
        return out

    return workflows


def retired(settings: Settings) -> Retired | None:
    """The earlier versions the settings name (`retired_workflows`), or None when they name
    none: they only finish the executions they started. Raises ConfigurationError naming
    each reference that cannot be used."""
    found = _found(settings, "retired_workflows")
    if found is None:
        return None
    source = settings.sources.get("retired_workflows", "retired_workflows")

    def earlier(service: KnowledgeService) -> Sequence[WorkflowDefinition]:
        problems: list[Problem] = []
        causes: list[BaseException] = []
        given = _given(found, service, source, problems, causes, "retired_workflows")
        if problems:
            _refuse(problems, causes)
        return [d for _, definitions in given for d in definitions]

    return earlier


def _found(settings: Settings, key: str) -> list[tuple[str, object]] | None:
    """Each reference of the setting `key`, imported; None when it names none."""
    specs: tuple[str, ...] = getattr(settings, key)
    if not specs:
        return None
    source = settings.sources.get(key, key)
    problems: list[Problem] = []
    causes: list[BaseException] = []
    found: list[tuple[str, object]] = []
    for spec in specs:
        try:
            found.append((spec, _resolve(spec, getattr(settings, f"{key}_dir"))))
        except _Unusable as exc:
            problems.append(Problem(key, source, f"{spec}: {exc}"))
            causes.append(exc)
    if problems:
        _refuse(problems, causes)
    return found


def _given(
    found: list[tuple[str, object]],
    service: KnowledgeService,
    source: str,
    problems: list[Problem],
    causes: list[BaseException],
    key: str = "workflows",
) -> list[tuple[str, list[WorkflowDefinition]]]:
    """What each reference gives; one that gives none usable is a problem (and its
    exception one of the `causes`)."""
    out = []
    for spec, value in found:
        try:
            out.append((spec, _definitions(value, service)))
        except _Unusable as exc:
            problems.append(Problem(key, source, f"{spec}: {exc}"))
            causes.append(exc)
    return out


def _refuse(problems: list[Problem], causes: list[BaseException]) -> NoReturn:
    """Every problem at once, raised from the first that came from the team's own code (an
    import or a registry that raised): `--debug` then shows its traceback, the lines of
    theirs that failed."""
    first = next((c.__cause__ for c in causes if c.__cause__ is not None), None)
    raise ConfigurationError(problems) from first


# govkernel's top-level packages: a team's package of one of these names is never imported.
_OWN_PACKAGES = frozenset({"adapters", "composition", "domain", "ports"})


def _hidden(module_name: str, beside: Path | None) -> str:
    """What to add when `module_name` is under one of govkernel's own package names and a
    package of that name sits where the team's modules are looked for: it is never imported."""
    top = module_name.split(".")[0]
    ours = sys.modules.get(top) if top in _OWN_PACKAGES else None
    if ours is None:
        return ""
    own = {Path(p).resolve() for p in getattr(ours, "__path__", ())}
    with contextlib.suppress(OSError):  # (a working directory deleted meanwhile)
        places = [Path.cwd(), *([beside] if beside else [])]
        if any(_a_module(p, module_name) and (p / top).resolve() not in own for p in places):
            return (
                f" ({top} is govkernel's own package, which hides one of yours by that name:"
                " rename yours)"
            )
    return ""


def _a_module(place: Path, module_name: str) -> bool:
    """Whether `module_name` is a module or a package of Python modules under `place` (a
    data directory of the same name hides nothing; a folder without __init__.py does)."""
    path = place.joinpath(*module_name.split("."))
    return path.with_suffix(".py").is_file() or (path.is_dir() and any(path.glob("*.py")))


class _Unusable(Exception):
    """Why a reference gives no workflows."""


def _resolve(spec: str, beside: Path | None) -> object:
    module_name, _, attribute = spec.partition(":")
    module = _import(module_name, beside)
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            hidden = _hidden(module_name, beside)
            raise _Unusable(f"{module_name} has no attribute {attribute!r}{hidden}")
        value = getattr(value, part)
    return value


def _import(name: str, beside: Path | None) -> object:
    """The module, found as `python -m` would find it: a console script's path does not hold
    the current directory, nor the settings file's, where a project keeps its modules.

    The settings file's directory is searched first, so that a file names the same code
    wherever the command runs; afterwards the directories added go to the end of the path,
    where a `queue.py` beside the file cannot shadow the standard library's."""
    added: list[str] = []

    def search(place: str) -> None:
        with contextlib.suppress(ValueError):
            sys.path.remove(place)
        sys.path.insert(0, place)
        added.append(place)

    if beside is not None:
        search(str(beside))
    try:
        while True:
            try:
                return importlib.import_module(name)
            except ModuleNotFoundError as exc:
                missing = exc.name or name
                try:
                    here = str(Path.cwd())
                except FileNotFoundError:  # deleted while this process was in it
                    here = ""
                if not here or here in sys.path or not name.startswith(missing):
                    hidden = _hidden(missing, beside) if missing != missing.split(".")[0] else ""
                    where = hidden or _where_looked(missing, here, beside)
                    raise _Unusable(
                        f"cannot import {name}: no module named {missing!r}{where}"
                    ) from None
                search(here)
            except (Exception, SystemExit) as exc:
                # A module that exits as it is imported must not end the command quietly,
                # with a status a cron job would read as success.
                raise _Unusable(f"importing {name} raised {_said(exc)}") from exc
    finally:
        for place in added:
            sys.path.remove(place)
            sys.path.append(place)


def _where_looked(missing: str, here: str, beside: Path | None) -> str:
    """Where a module was looked for, and what puts it there: a newcomer ran the command
    from another directory than the one holding the package."""
    top = missing.split(".")[0]
    places = [f"the working directory {here}"] if here else []
    places += [f"the settings file's directory {beside}"] if beside is not None else []
    places.append("PYTHONPATH")
    return (
        f" (looked for in {', '.join(places)}: run from the directory holding {top}, or add"
        " that directory to PYTHONPATH)"
    )


def registry_in_code(given: Callable[[KnowledgeService], object]) -> Registry:
    """`Overrides(workflows=...)` as the orchestrator takes it: the function may return
    anything a setting's reference may give (a definition, a list or mapping of them);
    anything else, or a name given twice, is a ConfigurationError naming the override.
    What the function raises is left to reach its caller."""
    _a_function("workflows", given)

    def workflows(service: KnowledgeService) -> Mapping[str, WorkflowDefinition]:
        found = _in_code("workflows", given, service)
        names = [d.name for d in found]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigurationError(
                [
                    Problem(
                        "workflows",
                        _IN_CODE % "workflows",
                        f"its result names {twice[0]!r}"
                        " twice: give one version of a workflow (earlier ones as retired)",
                    )
                ]
            )
        return {d.name: d for d in found}

    return workflows


def retired_in_code(given: Callable[[KnowledgeService], object]) -> Retired:
    """`Overrides(retired=...)`, checked as `registry_in_code` checks workflows."""
    _a_function("retired", given)
    return lambda service: _in_code("retired", given, service)


def _a_function(key: str, given: object) -> None:
    if not callable(given):
        raise ConfigurationError(
            [
                Problem(
                    key,
                    _IN_CODE % key,
                    f"is a {type(given).__name__}: give a function of the knowledge service"
                    f" returning your workflows ({key}=lambda service: [...])",
                )
            ]
        )


_IN_CODE = "Overrides(%s=...)"


def _in_code(
    key: str, given: Callable[[KnowledgeService], object], service: KnowledgeService
) -> list[WorkflowDefinition]:
    try:
        value = _called(given, service)
    except _Unusable as exc:
        raise ConfigurationError([Problem(key, _IN_CODE % key, str(exc))]) from None
    try:
        if callable(value):
            raise _Unusable(f"is a {type(value).__name__}: return the workflows themselves")
        return _definitions(value, service)
    except _Unusable as exc:
        raise ConfigurationError([Problem(key, _IN_CODE % key, f"its result {exc}")]) from None


def _definitions(value: object, service: KnowledgeService) -> list[WorkflowDefinition]:
    if callable(value) and not isinstance(value, WorkflowDefinition):
        if not inspect.isfunction(value):  # a typo naming `os:abort` must not call it
            raise _Unusable(
                f"is a {type(value).__name__}, not a function of yours returning workflows"
            )
        try:
            value = _called(value, service)
        except _Unusable:
            raise
        except (Exception, SystemExit) as exc:
            raise _Unusable(f"calling it raised {_said(exc)}") from exc
    if isinstance(value, WorkflowDefinition):
        return [value]
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str | bytes) and not value:
        raise _Unusable("gives no workflows")
    if isinstance(value, Mapping):
        for name, definition in value.items():
            if not isinstance(definition, WorkflowDefinition):
                raise _Unusable(f"{name!r} maps to a {type(definition).__name__}, not a workflow")
            if name != definition.name:
                raise _Unusable(f"{name!r} maps to the workflow named {definition.name!r}")
        return list(value.values())
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        wrong = [v for v in value if not isinstance(v, WorkflowDefinition)]
        if wrong:
            raise _Unusable(f"holds a {type(wrong[0]).__name__}, not a workflow")
        return list(value)
    raise _Unusable(
        f"is a {type(value).__name__}; give a WorkflowDefinition, a list or mapping of them,"
        " or a function returning one"
    )


def _called(function: Callable[..., object], service: KnowledgeService) -> object:
    """What `function` returns, given the service if it takes an argument."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # no signature to read (some callables): as documented
        return function(service)
    for args in ((service,), ()):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return function(*args)
    # Said as such: calling it anyway would blame its own code for a TypeError of the call.
    raise _Unusable(
        f"takes {one_line(str(signature))[:200]}: give a function of no argument, or of one"
        " (the knowledge service)"
    )


def _said(exc: BaseException) -> str:
    text = one_line(f"{type(exc).__name__}: {exc}"[:600])
    return text if len(text) <= 300 else text[:300] + "..."
