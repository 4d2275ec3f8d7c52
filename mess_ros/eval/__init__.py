"""Evaluation on rosbags: bag reading and writing, offline replay, results and reports.

Imports and runs without ROS; replaying a bag live through the node is
:mod:`mess_ros.ros.live_replay`.
"""
