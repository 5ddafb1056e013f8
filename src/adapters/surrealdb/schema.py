"""The SCHEMAFULL schema, rendered from the port's field spec and table indexes; applied
idempotently."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from ports.fields import FIELDS
from ports.storage import EVENT_TABLE, TABLES

SCHEMA_VERSION = 11  # 11: executions indexed by tenant, then state, workflow or time
META_TABLE = "govkernel_meta"
COUNTER_TABLE = "govkernel_counter"
KEY_TABLE = "govkernel_key"


def unique_index(table: str, fields: tuple[str, ...]) -> str:
    return f"uq_{table}_{'_'.join(fields)}"


# A unique index's entries kept again as records of their own, keyed by the index's name and
# values, each holding the id of the record that has those values. A look-up by natural key
# is then a read by id: on `surrealkv://` the engine answers a read by id in ~30 µs when it
# misses (the usual answer for a new source, analysis or capsule) and ~100 µs when it hits,
# and the same look-up through the index in ~300-450 µs. The unique index stays: it is what
# refuses a duplicate, and a key record that no longer matches its record is never trusted
# (see `SurrealStore.query`). Events are appended, never looked up by their id: no keys.
KEYED: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    table: tuple((unique_index(table, fields), fields) for fields in spec.uniques)
    for table, spec in TABLES.items()
    if spec.uniques and table != EVENT_TABLE
}


def indexes() -> dict[str, tuple[str, str]]:
    """Every index of this version: its name -> (its table, its definition as the engine
    says it back in `INFO FOR TABLE`). A name says what the index holds (its table, fields
    and whether unique), and govkernel names every index so: `uq_` or `ix_`, then those."""
    specs = [
        *((t, f, True) for t, spec in TABLES.items() for f in spec.uniques),
        *((t, f, False) for t, spec in TABLES.items() for f in spec.lookups),
        (EVENT_TABLE, ("position",), True),
    ]
    out: dict[str, tuple[str, str]] = {}
    for table, fields_, unique in specs:
        name = unique_index(table, fields_) if unique else f"ix_{table}_{'_'.join(fields_)}"
        suffix = " UNIQUE" if unique else ""
        out[name] = (table, f"DEFINE INDEX {name} ON {table} FIELDS {', '.join(fields_)}{suffix}")
    return out


def stale(found: Mapping[tuple[str, str], str], again: Collection[str] = ()) -> list[str]:
    """The indexes an upgrade must (re)build over the data stored, given those `found` on
    the store ((table, name) -> definition): the ones missing, defined otherwise, or named
    in `again` (an upgrade cut short was building them, so their entries may be partial).
    The others are kept as they are: defining an index again reads every record of its
    table (every index at once took 119 s at 12k executions)."""
    return [
        name
        for name, (table, text) in indexes().items()
        if name in again or found.get((table, name)) != text
    ]


# How govkernel names its indexes (and nothing else: names said back by a store are matched
# against it before they reach a statement).
_GOVKERNELS = re.compile(r"(uq|ix)_[a-z0-9_]+\Z")


def retired(found: Mapping[tuple[str, str], str]) -> list[tuple[str, str]]:
    """The indexes `found` on the store, on govkernel's tables and named as govkernel names
    its own, that this version has not: (name, table), to be removed (a unique one would go
    on refusing records)."""
    wanted = indexes()
    return [
        (name, table)
        for table, name in found
        if table in TABLES and _GOVKERNELS.match(name) and wanted.get(name, ("",))[0] != table
    ]


def statements(
    build: Collection[str] | None = None, remove: Collection[tuple[str, str]] = ()
) -> list[str]:
    """Every definition, with OVERWRITE so re-applying converges on this version: of the
    indexes, those in `build` (every one when None), and those in `remove` removed."""
    wanted = indexes()
    build = wanted.keys() if build is None else build
    out = [f"REMOVE INDEX IF EXISTS {name} ON {table}" for name, table in remove]
    for table, specs in FIELDS.items():
        out.append(f"DEFINE TABLE OVERWRITE {table} SCHEMAFULL")
        fixed = {name for fields_ in TABLES[table].uniques for name in fields_}
        for name, field in specs.items():
            check = field.constraint
            assertion = f" ASSERT {check.surrealql}" if check else ""
            # A natural key is fixed at creation (ports.storage.TableSpec): its key record
            # never has to move.
            readonly = " READONLY" if name in fixed else ""
            kind = field.kind.value
            out.append(f"DEFINE FIELD OVERWRITE {name} ON {table} TYPE {kind}{assertion}{readonly}")
        out += [
            _overwrite(text) for name, (on, text) in wanted.items() if on == table and name in build
        ]
    # The event counter, and on disk each commit's journal and completion marker: free-form.
    out.append(f"DEFINE TABLE OVERWRITE {COUNTER_TABLE} SCHEMALESS")
    out.append(f"DEFINE TABLE OVERWRITE {KEY_TABLE} SCHEMALESS")
    return out + MIGRATIONS + [_key_records(t, n, f) for t, keys in KEYED.items() for n, f in keys]


# Data moves for stores of an older schema; each is a no-op on a store that needs none.
MIGRATIONS = [
    # 5: an execution's input moved out of its record into one of its own.
    "FOR $x IN (SELECT id, tenant, input_json FROM execution WHERE input_json != NONE) {"
    " UPSERT type::thing('execution_input', record::id($x.id))"
    " CONTENT { tenant: $x.tenant, input_json: $x.input_json, version: 1 } RETURN NONE; }",
    # The field's definition goes, and so must its data: removing the definition alone left
    # every older execution's input stored twice, for good.
    "DEFINE FIELD OVERWRITE input_json ON execution TYPE option<string>",
    "UPDATE execution UNSET input_json WHERE input_json != NONE RETURN NONE",
    "REMOVE FIELD IF EXISTS input_json ON execution",
]


def _key_records(table: str, index: str, fields: tuple[str, ...]) -> str:
    """7: the key records of the rows already stored. Written only where missing or naming
    another record: writing all of them again made an upgrade's transaction so large that
    building an index in it took four times as long."""
    values = ", ".join(f"$x.{name}" for name in fields)
    present = " AND ".join(f"{name} != NONE" for name in fields)
    return (
        f"FOR $x IN (SELECT id, {', '.join(fields)} FROM {table} WHERE {present}) {{"
        f" LET $k = type::thing('{KEY_TABLE}', ['{index}', {values}]);"
        " IF $k.ref != $x.id { UPSERT $k SET ref = $x.id RETURN NONE; }; }"
    )


def _overwrite(definition: str) -> str:
    return definition.replace("DEFINE INDEX ", "DEFINE INDEX OVERWRITE ", 1)
