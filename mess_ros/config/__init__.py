"""The configuration schema: node parameters, their parameter files, the shared value checks.

One declaration per parameter (:mod:`.schema`, through :mod:`.fields`) gives
the ROS descriptors the node declares, the parameter files ``mess_configure``
writes (:mod:`.parameter_file`) and the validation of every change. The
value checks (:mod:`.checks`) are the ones the model specs and the training
config use too. Nothing here imports torch or rclpy, so reading or writing a
parameter file stays cheap.
"""

from __future__ import annotations

from mess_ros.config import parameter_file
from mess_ros.config.checks import Checks
from mess_ros.config.errors import ConfigError, invalid_configuration
from mess_ros.config.fields import ParameterSpec, ParamValue, parameter_problem
from mess_ros.config.schema import (
    ARTEFACT_PARAMETERS,
    BACKEND_NAMES,
    DEVICE_PATTERN,
    MIN_INPUT_SIDE,
    NICENESS_RANGE,
    POLICY_NAMES,
    PRECISIONS,
    REALTIME_RANGE,
    SCHEDULING_POLICIES,
    WILDCARD_NODE,
    DeadlineConfig,
    EngineConfig,
    NodeConfig,
    PolicyConfig,
    SegmentationConfig,
    parameter_names,
    unknown_parameter_problem,
)

__all__ = [
    "ARTEFACT_PARAMETERS",
    "BACKEND_NAMES",
    "DEVICE_PATTERN",
    "MIN_INPUT_SIDE",
    "NICENESS_RANGE",
    "POLICY_NAMES",
    "PRECISIONS",
    "REALTIME_RANGE",
    "SCHEDULING_POLICIES",
    "WILDCARD_NODE",
    "Checks",
    "ConfigError",
    "DeadlineConfig",
    "EngineConfig",
    "NodeConfig",
    "ParamValue",
    "ParameterSpec",
    "PolicyConfig",
    "SegmentationConfig",
    "invalid_configuration",
    "parameter_file",
    "parameter_names",
    "parameter_problem",
    "unknown_parameter_problem",
]
