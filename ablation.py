"""The seeded ablation of Tables I-IV on the built-in data set.

    python ablation.py                      # every variant, seeds 0, 1, 2
    python ablation.py --variants=groie,fair_rule --seeds=0 --max_runs=1

Trains and evaluates each variant (`groie_tf/ablation/variants.py`) with
each seed, with the README's main job's model, data and schedule, and
writes `docs/ablation.md`, `docs/ablation/ablation.json` and
`docs/ablation/ap_over_steps.png` after every run. A run that finished is
never run again: stop the sweep (Ctrl-C or SIGTERM; the running run saves
its step) and start the same command to go on. A failed run is reported in
the table and run again by the next sweep.

On 2 AVX-512 cores of an AMD EPYC, alone, a GRoIE run took 16 minutes and
a stock one 9 (evaluations included): the whole sweep (7 variants x 3
seeds) takes about 4 hours there, twice that or more without AVX-512;
`--max_runs` runs it in parts.
"""

import sys

from absl import flags
from absl import logging
import yaml

from groie_tf import cli
from groie_tf.ablation import report
from groie_tf.ablation import sweep
from groie_tf.ablation import variants as variants_lib
from groie_tf.errors import UserError

_VARIANTS = flags.DEFINE_list(
    'variants', [v.name for v in variants_lib.VARIANTS],
    'Variants to run, in this order within a seed.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'task.seed of the runs.')
_WORK_DIR = flags.DEFINE_string(
    'work_dir', '/tmp/groie_ablation',
    "The runs' model_dirs (checkpoints, summaries, train.log).")
_RESULTS_DIR = flags.DEFINE_string(
    'results_dir', 'docs',
    'Gets ablation.md, and ablation/ with the JSON, the plot and the run '
    'records (commit these).')
_EVAL_INTERVAL = flags.DEFINE_integer(
    'eval_interval', 150,
    'Steps between evaluations, for the AP-over-training plot.')
_PARAMS_OVERRIDE = flags.DEFINE_string(
    'params_override', '',
    'A YAML mapping laid over every run\'s config, e.g. to shrink the runs '
    '(then use another --results_dir).')
_MAX_RUNS = flags.DEFINE_integer(
    'max_runs', 0, 'Stop after this many runs (0: run them all).')
_REPORT_ONLY = flags.DEFINE_boolean(
    'report_only', False, 'Rebuild the report from the records; run nothing.')


def _variants():
  unknown = [n for n in _VARIANTS.value if n not in variants_lib.BY_NAME]
  if unknown:
    raise UserError(
        f'Unknown variant(s) {", ".join(unknown)}; the variants are '
        f'{", ".join(variants_lib.BY_NAME)}.')
  return [variants_lib.BY_NAME[n] for n in _VARIANTS.value]


def _seeds():
  try:
    return [int(seed) for seed in _SEEDS.value]
  except ValueError as error:
    raise UserError(f'--seeds must be integers: {error}') from error


def _override():
  if not _PARAMS_OVERRIDE.value:
    return {}
  override = yaml.safe_load(_PARAMS_OVERRIDE.value)
  if not isinstance(override, dict):
    raise UserError('--params_override must be a YAML mapping, such as '
                        "'{trainer: {train_steps: 10}}'.")
  return override


def main(_):
  variants, seeds, override = _variants(), _seeds(), _override()
  def write_report():
    path = report.write(_RESULTS_DIR.value, variants)
    logging.info('Report: %s', path)

  if not _REPORT_ONLY.value:
    try:
      sweep.run_sweep(variants, seeds, _WORK_DIR.value, _RESULTS_DIR.value,
                      _EVAL_INTERVAL.value, override, _MAX_RUNS.value,
                      on_record=write_report)
    except sweep.SweepStopped as stopped:
      logging.warning('Ablation stopped by %s; the running run saved its '
                      'step. Run the same command to go on.', stopped)
      sys.exit(128 + stopped.signal_number)
  write_report()


if __name__ == '__main__':
  cli.run(main)
