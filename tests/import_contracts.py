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


class AllowedImportsContract(Contract):
    type_name = "allowed_imports"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        sources: list[str] = list(self.source_modules)  # type: ignore[call-overload]
        own = {name.split(".")[0] for name in self.session_options["root_packages"]}
        allowed = own | set(self.allowed_modules) | set(sys.stdlib_module_names)  # type: ignore[call-overload]
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
