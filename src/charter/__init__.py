"""Charter: Constitutional AI, end to end.

Stages are plain functions over typed records (``charter.revise.revise`` …); the CLI verb,
the module and the function share one name. Heavy libraries are imported lazily.
"""

__version__ = "0.1.0"
