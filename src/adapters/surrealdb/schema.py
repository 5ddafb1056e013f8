"""The SCHEMAFULL schema, rendered from the port's field spec and table indexes; applied
idempotently."""

from __future__ import annotations

from ports.fields import FIELDS
from ports.storage import EVENT_TABLE, TABLES

SCHEMA_VERSION = 6
META_TABLE = "govkernel_meta"
COUNTER_TABLE = "govkernel_counter"


def statements() -> list[str]:
    """Every definition, with OVERWRITE so re-applying converges on this version."""
    out: list[str] = []
    for table, specs in FIELDS.items():
        out.append(f"DEFINE TABLE OVERWRITE {table} SCHEMAFULL")
        for name, field in specs.items():
            check = field.constraint
            assertion = f" ASSERT {check.surrealql}" if check else ""
            kind = field.kind.value
            out.append(f"DEFINE FIELD OVERWRITE {name} ON {table} TYPE {kind}{assertion}")
        for fields_ in TABLES[table].uniques:
            out.append(_index(table, fields_, unique=True))
        for fields_ in TABLES[table].lookups:
            out.append(_index(table, fields_, unique=False))
    out.append(_index(EVENT_TABLE, ("position",), unique=True))
    # The event counter, and on disk each commit's journal and completion marker: free-form.
    out.append(f"DEFINE TABLE OVERWRITE {COUNTER_TABLE} SCHEMALESS")
    return out + MIGRATIONS


# Data moves for stores of an older schema; each is a no-op on a store that needs none.
MIGRATIONS = [
    # 5: an execution's input moved out of its record into one of its own.
    "FOR $x IN (SELECT id, tenant, input_json FROM execution WHERE input_json != NONE) {"
    " UPSERT type::thing('execution_input', record::id($x.id))"
    " CONTENT { tenant: $x.tenant, input_json: $x.input_json, version: 1 } RETURN NONE; }",
    "REMOVE FIELD IF EXISTS input_json ON execution",
]


def _index(table: str, fields: tuple[str, ...], *, unique: bool) -> str:
    name = ("uq_" if unique else "ix_") + table + "_" + "_".join(fields)
    suffix = " UNIQUE" if unique else ""
    return f"DEFINE INDEX OVERWRITE {name} ON {table} FIELDS {', '.join(fields)}{suffix}"
