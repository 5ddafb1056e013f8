"""Workflow definitions built from domain services."""
