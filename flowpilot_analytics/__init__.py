"""FlowPilot Analytics: post-claim activity lag of escalated AI sessions."""

# The one place the version lives: pyproject.toml reads it (dynamic version).
__version__ = "0.1.0"
