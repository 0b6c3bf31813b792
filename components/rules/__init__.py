"""The rules family of components (see docs/components.md)."""

__all__: list[str] = []
