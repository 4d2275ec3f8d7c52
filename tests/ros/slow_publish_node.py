"""``segmentation_node`` whose mask publishing takes ``--publish-delay-ms`` longer (tests only).

Stands for a slow consumer path (a large colour mask, a loaded DDS stack): the
deadline must be judged after it, and the node must learn and budget for it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mess_ros.ros import camera_stream, node


def main() -> int:
    args = sys.argv[1:]
    delay_s = float(args[args.index("--publish-delay-ms") + 1]) / 1000.0
    del args[args.index("--publish-delay-ms") : args.index("--publish-delay-ms") + 2]
    publish = camera_stream.CameraStream.publish_masks

    def slow_publish(self: camera_stream.CameraStream, *payload: Any) -> list[str]:
        time.sleep(delay_s)
        return publish(self, *payload)

    camera_stream.CameraStream.publish_masks = slow_publish  # type: ignore[method-assign]
    return node.main([sys.argv[0], *args])


if __name__ == "__main__":
    sys.exit(main())
