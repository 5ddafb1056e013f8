"""The composition root: settings, the dependency-injector container, the `govkernel` CLI.

Nothing happens at import time: settings are read, and the store is opened, only when a
command (or `composition.container.build_app`) asks for them.
"""
