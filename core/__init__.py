"""The ground every stage stands on: the message, the configuration, the rows, the errors, and the clients and
edges they share (docs/architecture.md). It imports no stage and nothing of the composition."""

#: The project's version, declared once (pyproject.toml reads it; CHANGELOG.md says what each one brought).
__version__ = "0.2.0"
