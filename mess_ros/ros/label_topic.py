"""The label set of the loaded model, discoverable without reading code.

A visualiser needs the class names and colours to show a ``mask``. The node
offers them twice, both read-only:

* parameters ``labels.class_names`` (string array) and ``labels.colors``
  (string array of ``#rrggbb``, one per class, in class-id order), for
  ``ros2 param get`` and tools that read parameters;
* the ``labels`` topic, ``std_msgs/String`` holding one JSON object, published
  once with ``transient_local`` durability so that a visualiser started
  later still receives it (subscribe with transient-local, reliable QoS). No
  custom message type is needed to read it::

      {"name": "synthetic", "class_names": ["road", ...], "colors": [[128, 64, 128], ...],
       "hex_colors": ["#804080", ...], "ignore_index": 255}

  A class id ``i`` of ``mask`` (``mono8``) is ``class_names[i]``, drawn in
  ``colors[i]``; ``ignore_index`` marks pixels without a class.
"""

from __future__ import annotations

import json
from typing import Final

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from std_msgs.msg import String

from mess_ros.data.errors import DataError
from mess_ros.data.labels import LabelSet
from mess_ros.ros.errors import RosError

LABELS_TOPIC: Final = "labels"
CLASS_NAMES_PARAMETER: Final = "labels.class_names"
COLORS_PARAMETER: Final = "labels.colors"
LABEL_PARAMETERS: Final = frozenset((CLASS_NAMES_PARAMETER, COLORS_PARAMETER))


def labels_message(labels: LabelSet) -> String:
    """The ``labels`` topic's message for ``labels``."""
    data = {**labels.to_dict(), "hex_colors": labels.hex_colors()}
    return String(data=json.dumps(data))


def labels_from_message(msg: String) -> LabelSet:
    """The label set a ``labels`` message describes (the inverse of :func:`labels_message`)."""
    try:
        return LabelSet.from_dict(json.loads(msg.data))
    except (json.JSONDecodeError, DataError) as err:
        raise RosError(f"a labels message does not describe a label set: {err}") from err


def declare_label_parameters(node: Node, labels: LabelSet) -> None:
    """``labels.class_names`` and ``labels.colors`` as read-only parameters of ``node``.

    Read-only parameters cannot be undeclared, and the model (read-only too)
    cannot change, so a node configured again keeps the ones it declared.
    """
    values = {
        CLASS_NAMES_PARAMETER: (
            list(labels.class_names),
            "Names of the classes the model predicts; the value of a mask pixel indexes it.",
        ),
        COLORS_PARAMETER: (
            labels.hex_colors(),
            "Colour of each class in mask_color and mask_overlay (#rrggbb), in class order.",
        ),
    }
    for name, (value, description) in values.items():
        if node.has_parameter(name):
            continue
        descriptor = ParameterDescriptor(
            name=name,
            type=ParameterType.PARAMETER_STRING_ARRAY,
            description=f"{description} Set by the loaded model.",
            read_only=True,
        )
        node.declare_parameter(name, value, descriptor)
