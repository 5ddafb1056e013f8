"""Tests of the composition root: settings, container, documents and the govkernel CLI."""
