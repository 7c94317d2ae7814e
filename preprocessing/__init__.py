"""Videos → object flow: video I/O, point sampling, trackers, the flow-dataset format, overlays.

The bottom of the import chain (``policies → im2flow → preprocessing``): it imports neither of the others,
and the shared config and registry helpers live here for that reason.
"""
