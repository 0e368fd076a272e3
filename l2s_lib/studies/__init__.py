"""What the study notebooks call: parameter files, papermill runs, merge-and-evaluate grids."""
