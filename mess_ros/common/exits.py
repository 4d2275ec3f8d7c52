"""Exit ids: the names every part of mess_ros uses for a network's exits.

An intermediate exit is ``<point>:<head>``: the backbone block it sits after
and the head spec that computes it (``layer2_1:fcn_c64_k2_d1``); the final
exit is ``final``. Parameter files, latency tables, calibration caches and
``exit_info`` all speak this grammar, so it lives here, below all of them.
"""

from __future__ import annotations

from typing import Final

FINAL_EXIT: Final = "final"
"""Exit id of the network's final head."""


def is_exit_id(text: str) -> bool:
    """``final`` or ``<point>:<head>`` with both parts non-empty."""
    if text == FINAL_EXIT:
        return True
    point, sep, head = text.partition(":")
    return bool(sep and point and head)


def exit_point(exit_id: str) -> str:
    """The backbone point an intermediate exit sits after (``layer2_1`` of ``layer2_1:linear``)."""
    return exit_id.partition(":")[0]
