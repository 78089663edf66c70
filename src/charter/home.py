"""Where Charter keeps what it downloads and derives: ``$CHARTER_HOME`` or ``~/.cache/charter``."""

from __future__ import annotations

import os
from pathlib import Path


def models_dir() -> Path:
    """Return the folder pulled GGUF files go to: ``$CHARTER_HOME/models`` or the user cache."""
    home = os.environ.get("CHARTER_HOME")
    if home:
        return Path(home).expanduser() / "models"
    return Path.home() / ".cache" / "charter" / "models"
