"""The shipped YAML presets, one folder per stage; installed as ``im2flow2act.configs`` package data.

Find one by name with ``im2flow2act.core.presets.resolve_preset`` (``quick`` → ``pipeline/quick.yaml``).
"""
