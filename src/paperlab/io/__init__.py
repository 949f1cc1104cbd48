"""Shared file helpers: atomic writes of files and whole directories, the cache location."""

from paperlab.io.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from paperlab.io.cache import cache_dir

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text", "cache_dir"]
