"""Trains and evaluates GRoIE detectors with TF Model Garden.

    python train.py --experiment=groie_maskrcnn_shapes \
        --mode=train_and_eval --model_dir=/tmp/groie_shapes

Flags are Model Garden's (`official.common.flags`): `--experiment` (a
registered name, see `groie_tf/configs/experiments.py`), `--mode` (`train`,
`eval`, `train_and_eval`, `continuous_eval`), `--model_dir`, `--config_file`
(repeatable YAML deltas, for example `configs/paper/*.yaml`) and
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
from official.core import train_utils

from groie_tf import cli
from groie_tf import training

FLAGS = flags.FLAGS


def main(_):
  cli.check_experiment(FLAGS.experiment)
  # Overrides, validates; the config is saved to model_dir/params.yaml
  # rather than logged (300 lines).
  params = train_utils.parse_configuration(FLAGS, print_return=False)
  training.run(params, FLAGS.mode, FLAGS.model_dir, FLAGS.experiment)


if __name__ == '__main__':
  tfm_flags.define_flags()
  flags.mark_flags_as_required(['experiment', 'mode', 'model_dir'])
  cli.run(main)
