"""Composition and execution: pipelines, IO, batch processing, solve, CLI and report."""

__all__: list[str] = []
