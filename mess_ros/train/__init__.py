"""Two-stage training of MESS networks, baselines, and the calibration cache.

Stage 1 trains the backbone with the final head and light exits at every
candidate point; stage 2 freezes them and trains the pool of candidate exit
heads with positive-filtering distillation from the final exit. The run
directory it writes (checkpoint, config, metrics, calibration cache) is what
the deployment search consumes.
"""

from __future__ import annotations
