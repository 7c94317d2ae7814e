"""CoTracker3 (Karaev et al. 2024) in our own code, loading the official ``facebook/cotracker3`` checkpoints.

Registers ``cotracker3`` (offline, ``scaled_offline.pth``) and ``cotracker3-online`` (``scaled_online.pth``)
in ``TRACKERS``. Modules: ``blocks`` (CNN encoder, attention blocks), ``sampling`` (bilinear sampling,
pyramid, correlation), ``updateformer``, ``model`` (the two variants and the sliding windows),
``weights`` (checkpoint loading), ``predictor`` (the ``Tracker`` backends). Only ``predictor`` is imported
here, and it imports torch lazily.
"""

from im2flow2act.preprocessing.trackers.cotracker3.predictor import (
    CoTracker3Config,
    CoTracker3OnlineConfig,
    CoTracker3OnlineTracker,
    CoTracker3Tracker,
)

__all__ = ["CoTracker3Config", "CoTracker3OnlineConfig", "CoTracker3OnlineTracker", "CoTracker3Tracker"]
