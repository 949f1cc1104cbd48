"""paperlab: working implementations of seven November-2025 research systems.

Importing this package is cheap on purpose: no torch, no transformers, no network stack.
Each system lives in its own subpackage and pulls its heavy dependencies when used.
"""

from paperlab.errors import PaperlabError

__version__ = "0.1.0"
__all__ = ["PaperlabError", "__version__"]
