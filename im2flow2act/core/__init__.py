"""Plumbing every stage shares: dataclass configs, the component registry, presets, checkpoints, run logs.

It sits below ``preprocessing``, ``im2flow`` and ``policies`` in the import chain and imports none of them.
"""
