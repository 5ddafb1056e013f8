"""Adapters: implementations of the ports. Each adapter package is independent of the others."""
