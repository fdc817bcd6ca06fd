"""`python train.py ...` is `python -m groie_tf.train ...` (see there)."""
from groie_tf.train import run

run()
