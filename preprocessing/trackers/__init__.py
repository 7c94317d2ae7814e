"""Point trackers behind one interface, by name from ``TRACKERS`` (``lk``, ``object-lk``: no weights)."""

from im2flow2act.preprocessing.trackers import cotracker3, object_lk  # noqa: F401  (registers cotracker3, object-lk)
from im2flow2act.preprocessing.trackers.base import TRACKERS, OnlineTracker, Tracker
from im2flow2act.preprocessing.trackers.lucas_kanade import LKConfig, LucasKanadeTracker

__all__ = ["TRACKERS", "LKConfig", "LucasKanadeTracker", "OnlineTracker", "Tracker"]
