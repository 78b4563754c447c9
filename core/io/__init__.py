"""Files: atomic writes, run folders, checkpoint files, image files (reading, checking, writing)."""
