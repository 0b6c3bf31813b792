"""The dock: specifications, learnware packages, the spec registry and the task library."""

__all__: list[str] = []
