"""Evaluation: metrics, rosbag replay and reports."""
