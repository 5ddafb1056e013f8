"""The pure domain model: entities, value objects, lifecycle, policies and errors."""
