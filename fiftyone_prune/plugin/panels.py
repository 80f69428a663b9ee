"""App panels (none yet)."""

PANELS = []
