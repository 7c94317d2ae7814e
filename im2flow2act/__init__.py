"""im2flow2act: teach robots manipulation skills from videos of people, with object flow as the interface.

The stages are subpackages: ``im2flow2act.preprocessing`` (videos → object flow), ``im2flow2act.im2flow``
(the flow generator) and ``im2flow2act.policies`` (the flow-conditioned policy and its MuJoCo world);
``im2flow2act.core`` holds the plumbing every stage shares. Importing this package imports none of them.
"""

__version__ = "0.2.0"
