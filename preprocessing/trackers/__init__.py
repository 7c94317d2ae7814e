"""Point trackers behind one interface, picked by name from ``TRACKERS`` (``lk`` needs no weights)."""

from im2flow2act.preprocessing.trackers import cotracker3  # noqa: F401  (registers cotracker3, cotracker3-online)
from im2flow2act.preprocessing.trackers.base import TRACKERS, OnlineTracker, Tracker
from im2flow2act.preprocessing.trackers.lucas_kanade import LKConfig, LucasKanadeTracker

__all__ = ["TRACKERS", "LKConfig", "LucasKanadeTracker", "OnlineTracker", "Tracker"]
