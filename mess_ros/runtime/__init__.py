"""Runtime: the inference engine, exit policies and the online latency model.

Submodules are imported explicitly (``mess_ros.runtime.engine`` ...), so
that a module needing one part does not pay for importing torch. The
configuration the engine runs is :mod:`mess_ros.config`.
"""

from __future__ import annotations
