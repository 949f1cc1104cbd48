"""Shared file helpers: atomic writes of files and whole directories."""

from paperlab.io.atomic import atomic_directory, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text"]
