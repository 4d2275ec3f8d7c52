"""Root of the exception families.

Each subpackage has its own ``errors.py`` whose classes derive from
:class:`MessError`, so a caller can catch one subsystem's failures or all of
them without catching programming errors such as ``TypeError``.
"""

from __future__ import annotations


class MessError(Exception):
    """Base class of every error mess_ros raises on purpose."""
