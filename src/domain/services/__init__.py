"""Domain services: the governed mutations, written against ports only."""
