"""The processor's import point for the transform registry, which lives in the core.

The registry moved to ``pipeline.transforms`` so the viewer can validate upload specs and
compute a chain's halo without importing this stage; processor code keeps importing from here.
"""
from pipeline.transforms import *  # noqa: F403
