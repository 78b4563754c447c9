"""Using a trained model: loading a run, the API's inputs, sample grids, videos, translation, the
web demo, export, Hub folders and their model card, face alignment."""
