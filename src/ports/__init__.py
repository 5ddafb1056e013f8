"""Ports: the abstract unit of work, repositories and the services the domain needs."""
