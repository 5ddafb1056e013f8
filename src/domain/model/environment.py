"""The deployment environment: the one place its names are spelled."""

from __future__ import annotations

import enum


class Environment(enum.Enum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"

    @property
    def is_production(self) -> bool:
        return self is Environment.PRODUCTION

    @classmethod
    def spelled_in_code(cls) -> str:
        """The members as code names them, for messages refusing anything else."""
        return ", ".join(f"Environment.{e.name}" for e in cls)
