"""Seeded generators of sample data with exact ground truth."""

__all__: list[str] = []
