"""Enable learndock's contract suite (``learndock_case`` and ``learndock_check`` fixtures)."""

pytest_plugins = ["learndock.pytest_plugin"]
