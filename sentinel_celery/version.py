"""The package version, in one place (the registry records it for each worker)."""
__version__ = "0.1.0"
