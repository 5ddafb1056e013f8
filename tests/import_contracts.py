"""An import-linter contract type that import-linter lacks: an allowlist of packages.

`forbidden` names what may not be imported, so a package installed later (a dependency's
dependency) passes it unnamed. This one names what may be: the standard library, the
project's own packages and `allowed_modules`; any other top-level package that a module under
`source_modules` imports breaks it. contracts.ini registers it (`contract_types`).
"""

from __future__ import annotations

import sys

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

# Standard-library modules removed by a later Python (3.12: PEP 632 and 594's first; 3.13:
# the rest of PEP 594's): code that needs one stops importing on a Python the project
# supports, so they are not allowed whichever Python runs the check.
REMOVED_FROM_STDLIB = frozenset(
    [
        "asynchat",
        "asyncore",
        "distutils",
        "imp",
        "smtpd",
        "aifc",
        "audioop",
        "cgi",
        "cgitb",
        "chunk",
        "crypt",
        "imghdr",
        "lib2to3",
        "mailcap",
        "msilib",
        "nis",
        "nntplib",
        "ossaudiodev",
        "pipes",
        "sndhdr",
        "spwd",
        "sunau",
        "telnetlib",
        "uu",
        "xdrlib",
    ]
)


class AllowedImportsContract(Contract):
    type_name = "allowed_imports"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        sources: list[str] = list(self.source_modules)  # type: ignore[call-overload]
        own = {name.split(".")[0] for name in self.session_options["root_packages"]}
        stdlib = set(sys.stdlib_module_names) - REMOVED_FROM_STDLIB
        allowed = own | set(self.allowed_modules) | stdlib  # type: ignore[call-overload]
        found = sorted(
            (importer, imported)
            for importer in graph.modules
            if any(importer == s or importer.startswith(f"{s}.") for s in sources)
            for imported in graph.find_modules_directly_imported_by(importer)
            if imported.split(".")[0] not in allowed
        )
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, imported in check.metadata["found"]:
            output.print_error(f"{importer} -> {imported} (not allowed)", bold=False)
            output.new_line()
