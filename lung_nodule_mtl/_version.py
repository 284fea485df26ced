"""The package version, in one place (read by pyproject.toml and by exported bundles' copies of the code)."""

__version__ = "0.1.0"
