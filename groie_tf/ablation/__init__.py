"""The seeded ablation on the built-in data set (`ablation.py`)."""
