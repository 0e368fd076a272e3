"""The one pipeline: the catalogue of models and merge methods, the grid of entries, and the one merge cache."""
