"""Runtime: the inference engine, exit policies and the online latency model.

Submodules are imported explicitly (``mess_ros.runtime.config``,
``mess_ros.runtime.engine`` ...) so that reading a parameter file does not
pay for importing torch.
"""

from __future__ import annotations
