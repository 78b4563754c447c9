"""Using a trained model: loading a run, sample grids, videos, translation, the web demo, export, Hub folders, face alignment."""
