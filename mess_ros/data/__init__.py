"""Datasets, label sets, the synthetic scene generator and the shared preprocessing.

Modules are imported explicitly (``mess_ros.data.labels``, ``mess_ros.data.synthetic``...)
so that a consumer that only needs label tables does not pay for torch.
"""
