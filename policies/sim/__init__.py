"""The MuJoCo world: a UR5e tabletop scene, four tasks with success checks, 'human' sphere-agent
demonstrations, robot play data and scripted experts.

MuJoCo reads ``MUJOCO_GL`` when it is first imported and otherwise tries a windowed (GLFW) context that
fails on a headless machine, so this package picks EGL before any submodule imports mujoco. Set
``MUJOCO_GL=osmesa`` (or ``glfw`` on a desktop) yourself to override it.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
