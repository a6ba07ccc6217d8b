"""The Ray layer: gradient actors, parallel solves, and cluster connection.

Importing this package imports Ray; the algorithms in ``raytraj.perm`` and
``raytraj.transfer`` never do.
"""

from .backend import RayBackend
from .cluster import connect

__all__ = ["RayBackend", "connect"]
