"""Deployment tools: profile a robot, search its exit configuration, write its parameter file.

The search core (:mod:`mess_ros.deploy.search`, :mod:`mess_ros.deploy.pareto`)
is numpy only; the modules that load checkpoints, profile or verify import
torch and the runtime, so they are imported explicitly where needed.
"""

from __future__ import annotations
