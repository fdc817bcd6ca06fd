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
resumes from its last checkpoint.
"""

from absl import app
from absl import flags
from official.common import flags as tfm_flags
from official.core import train_utils

from groie_tf import training

FLAGS = flags.FLAGS


def main(_):
  params = train_utils.parse_configuration(FLAGS)  # overrides, validates
  training.run(params, FLAGS.mode, FLAGS.model_dir, FLAGS.experiment)


if __name__ == '__main__':
  tfm_flags.define_flags()
  flags.mark_flags_as_required(['experiment', 'mode', 'model_dir'])
  app.run(main)
