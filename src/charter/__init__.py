"""Charter: Constitutional AI, end to end.

Stages are plain functions over typed records (``charter.stages.revise.revise`` …); the CLI verb,
the module and the function share one name. Heavy libraries are imported lazily.
"""

__version__ = "0.1.0"

# The embedded default: SmolLM2-135M-Instruct served by llama.cpp (see backends/local.py).
DEFAULT_MODEL = "local/smollm2-135m"
