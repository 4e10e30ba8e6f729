"""The release, in a module of its own: readers of the version need not import the package root (and its API)."""

__version__ = "0.1.0"
