"""raytraj: transfer the learning trajectories of neural networks, on one machine or a Ray cluster."""

__version__ = "0.1.0"
