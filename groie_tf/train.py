"""Trains and evaluates GRoIE detectors with TF Model Garden.

    python -m groie_tf.train --experiment=groie_maskrcnn_shapes \
        --mode=train_and_eval --model_dir=/tmp/groie_shapes

(`python train.py ...` in a checkout, and `groie-train ...` once installed,
run the same.)

Flags are Model Garden's (`official.common.flags`): `--experiment` (a
registered name, see `groie_tf/configs/experiments.py`), `--mode` (`train`,
`eval`, `train_and_eval`, `continuous_eval`), `--model_dir`, `--config_file`
(repeatable YAML deltas, applied in order: for a paper row,
`configs/paper/base_1x_8gpu.yaml` then the row's file) and
`--params_override`.

Distribution follows `runtime.distribution_strategy`: `mirrored` (the
default) over every visible GPU, `multi_worker_mirrored` over the machines
named in `TF_CONFIG`, or `tpu`. A run restarted with the same `--model_dir`
resumes from its last checkpoint; SIGTERM or Ctrl-C saves one at the current
step first (the exit status is then 128 + the signal's number).

A mistake in the command, the config or the data prints one line saying
what to change and exits with status 2 (`--traceback` for the whole story);
a record that does not decode stops training that way too, after a
checkpoint of the last completed step.
"""

from absl import flags
from official.common import flags as tfm_flags

from groie_tf import cli
from groie_tf import training
from groie_tf.configs import loading

FLAGS = flags.FLAGS


def main(_):
  # Overrides, validates; the config is saved to model_dir/params.yaml
  # rather than logged (300 lines).
  params = loading.load_experiment_from_flags(FLAGS)
  training.run(params, FLAGS.mode, FLAGS.model_dir, FLAGS.experiment)


def run() -> None:
  """The command line: Model Garden's training flags, then `main`."""
  tfm_flags.define_flags()
  flags.mark_flags_as_required(['experiment', 'mode', 'model_dir'])
  cli.run(main)


if __name__ == '__main__':
  run()
