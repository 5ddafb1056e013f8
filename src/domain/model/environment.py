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
