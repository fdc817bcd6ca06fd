"""The ablation's variants, report and record checks, without training."""

import json
import os

import numpy as np
import pytest

from groie_tf import training
from groie_tf.ablation import report
from groie_tf.ablation import sweep
from groie_tf.ablation import variants as variants_lib


def _record(variant, seed, status='ok', box=0.5, mask=0.4, large=-1.0):
  """A run record as `sweep.run_one` writes it."""
  final = {'AP': box, 'AP50': box + 0.2, 'AP75': box, 'APs': box, 'APm': box,
           'APl': large, 'mask_AP': mask, 'mask_AP50': mask, 'mask_AP75': mask,
           'mask_APs': mask, 'mask_APm': mask, 'mask_APl': large}
  record = {'run': f'{variant}_seed{seed}', 'variant': variant, 'seed': seed,
            'status': status, 'exit_code': 0 if status == 'ok' else 1,
            'commit': 'abc1234', 'config': {}}
  if status == 'ok':
    record.update(final=final, step=900, training_seconds=600.0,
                  median_steps_per_second=1.5,
                  evaluations=[{'step': 450, 'AP': box / 2,
                                'mask_AP': mask / 2},
                               {'step': 900, 'AP': box, 'mask_AP': mask}])
  return record


def test_summary_averages_finished_runs_only():
  records = [_record('groie', 0, box=0.5), _record('groie', 1, box=0.7),
             _record('groie', 2, status='failed'),
             _record('stock', 0, box=0.4, large=0.3)]
  summaries = report.summarize(records, variants_lib.VARIANTS)
  assert [s['variant'] for s in summaries] == ['stock', 'groie']  # table order
  groie = summaries[1]
  assert groie['seeds'] == [0, 1] and groie['failed_seeds'] == [2]
  assert groie['metrics']['AP']['mean'] == pytest.approx(0.6)
  assert groie['metrics']['AP']['std'] == pytest.approx(np.std([0.5, 0.7],
                                                               ddof=1))
  # pycocotools' -1 (no object in the size range) is no value, not a zero.
  assert groie['metrics']['APl']['mean'] is None
  assert summaries[0]['metrics']['APl']['mean'] == pytest.approx(0.3)
  assert summaries[0]['metrics']['AP']['std'] is None  # one seed
  text = report.markdown(summaries, records, 'ablation/plot.png')
  assert '| `groie` | 0,1 | 0.600 ± 0.141 |' in text
  assert '| `groie_seed2` | **failed** (exit 1) |' in text
  assert '| `stock` | 0 | 0.400 |' in text
  assert '![AP over training](ablation/plot.png)' in text


def test_each_variant_is_compared_with_the_baseline_of_its_seed():
  records = [_record('stock', 0, box=0.50, mask=0.40),
             _record('stock', 1, box=0.60, mask=0.50),
             _record('stock', 2, status='failed'),
             _record('groie', 0, box=0.53, mask=0.39),
             _record('groie', 1, box=0.65, mask=0.48),
             _record('groie', 2, box=0.90),  # no baseline for seed 2
             _record('random', 1, box=0.45)]
  records[1]['resumed_at'] = [350]  # stock, seed 1
  records[3]['resumed_at'] = [100]  # groie, seed 0
  paired = report.against_baseline(records, variants_lib.VARIANTS)
  assert [p['variant'] for p in paired] == ['random', 'groie']
  groie = paired[1]
  assert groie['seeds'] == [0, 1] and groie['resumed'] == [0, 1]
  assert paired[0]['resumed'] == [1]  # through the baseline's run
  assert groie['AP']['per_seed'] == pytest.approx([0.03, 0.05])
  assert groie['AP']['std'] == pytest.approx(np.std([0.03, 0.05], ddof=1))
  # Differences below zero are values, not pycocotools' -1 for "none".
  assert groie['mask_AP']['per_seed'] == pytest.approx([-0.01, -0.02])
  assert groie['mask_AP']['mean'] == pytest.approx(-0.015)
  assert groie['AP']['seeds_ahead'] == 2
  assert groie['mask_AP']['seeds_ahead'] == 0
  assert paired[0]['AP']['per_seed'] == pytest.approx([-0.15])
  assert paired[0]['AP']['std'] is None
  summaries = report.summarize(records, variants_lib.VARIANTS)
  text = report.markdown(summaries, records, None, paired)
  assert ('| `groie` | 0*,1* | +3.0, +5.0 | +4.0 ± 1.4 | 2 of 2 | '
          '-1.0, -2.0 | -1.5 ± 0.7 | 0 of 2 |') in text
  assert '| `random` | 1* | -15.0 | -15.0 | 0 of 1 |' in text


def test_training_time_is_averaged_per_kind_of_machine():
  """A mean over a fast and a slow machine would measure the mix."""
  fast = {'cpu': 'AMD EPYC', 'cores': 2, 'avx512': True, 'gpus': 0}
  slow = dict(fast, avx512=False)
  records = [_record('sum', seed) for seed in range(4)]
  for record, machine, minutes in zip(records, (fast, slow, fast, None),
                                      (10, 30, 14, 50)):
    record['training_seconds'] = 60.0 * minutes
    if machine:
      record['machine'] = machine
  [summary] = report.summarize(records, variants_lib.VARIANTS)
  by_label = {c['machine']: c for c in summary['cost']}
  assert sorted(by_label) == ['AMD EPYC, 2 cores, AVX-512, no GPU',
                              'AMD EPYC, 2 cores, no AVX-512, no GPU',
                              'not recorded']
  fast_cost = by_label['AMD EPYC, 2 cores, AVX-512, no GPU']
  assert fast_cost['seeds'] == [0, 2]
  assert fast_cost['training_minutes']['mean'] == pytest.approx(12.0)
  assert by_label['not recorded']['seeds'] == [3]
  text = report.markdown([summary], records, None)
  assert ('| `sum` | - | AMD EPYC, 2 cores, AVX-512, no GPU | 0,2 | '
          '1.50 ± 0.00 | 12.0 ± 2.8 |') in text
  assert '| not recorded | 3 | 1.50 | 50.0 |' in text


def test_the_machine_a_run_records():
  described = sweep.machine()
  assert described['cores'] == len(os.sched_getaffinity(0))
  assert described['cpu'] and described['gpus'] >= 0
  assert described['avx512'] in (True, False)  # Linux: read from cpuinfo
  assert sweep.machine_label(described).startswith(described['cpu'])
  assert sweep.machine_label(dict(described, gpus=2)).endswith(', 2 GPU')
  # tests/test_training.py's golden losses check cpu_kernels() under each
  # TF_ENABLE_ONEDNN_OPTS.
  assert described['cpu_kernels'] in ('oneDNN', 'Eigen')
  assert f', {described["cpu_kernels"]} kernels, ' in sweep.machine_label(
      described)
  older = {k: v for k, v in described.items() if k != 'cpu_kernels'}
  assert 'kernels' not in sweep.machine_label(older)


def test_every_variant_builds_and_differs():
  """Each row's config validates; no two rows train the same model."""
  configs = []
  for variant in variants_lib.VARIANTS:
    params = variant.experiment_config()
    params.validate()
    configs.append(params.task.model.as_dict())
  for i, config in enumerate(configs):
    assert all(config != other for other in configs[i + 1:])
  fair = variants_lib.BY_NAME['fair_rule_with_modules']
  groie = variants_lib.BY_NAME['groie']
  # The capacity control has GRoIE's weights exactly.
  assert (report.extractor_parameters(fair) ==
          report.extractor_parameters(groie) > 0)
  assert report.extractor_parameters(variants_lib.BY_NAME['stock']) == 0


def test_a_record_made_with_other_settings_is_not_taken_as_done(tmp_path):
  record = _record('sum', 0)
  record['config'] = {'task': {'seed': 0}}  # not what this sweep would run
  os.makedirs(sweep.runs_dir(str(tmp_path)))
  with open(os.path.join(sweep.runs_dir(str(tmp_path)), 'sum_seed0.json'),
            'w') as f:
    json.dump(record, f)
  with pytest.raises(sweep.ConfigMismatch, match='sum_seed0'):
    sweep.run_sweep([variants_lib.BY_NAME['sum']], [0], str(tmp_path / 'w'),
                    str(tmp_path))


def test_the_report_follows_the_records_on_disk(tmp_path):
  """The plot is drawn from the records there, and removed with them."""
  results = str(tmp_path)
  os.makedirs(sweep.runs_dir(results))
  record_path = os.path.join(sweep.runs_dir(results), 'groie_seed0.json')
  with open(record_path, 'w') as f:
    json.dump(_record('groie', 0, box=0.55), f)
  plot_path = os.path.join(results, 'ablation', report.PLOT_NAME)
  text = open(report.write(results, variants_lib.VARIANTS)).read()
  assert '1 run record(s)' in text and 'abc1234' in text
  assert '| `groie` | 0 | 0.550 |' in text and os.path.exists(plot_path)
  os.remove(record_path)
  text = open(report.write(results, variants_lib.VARIANTS)).read()
  assert '0 run record(s) in `ablation/runs/`;' in text
  assert '0.550' not in text and not os.path.exists(plot_path)
  summaries = json.load(open(os.path.join(results, 'ablation',
                                          'ablation.json')))['variants']
  assert all(not s['seeds'] for s in summaries)


def test_a_record_keeps_the_steps_its_run_resumed_at(tmp_path):
  """A resumed run is reseeded: its result depends on where it resumed.
  `training.resumed_params` finds the step; the model_dir keeps every
  resume's step, oldest first, for the sweep's record."""
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  assert training.resume_steps(str(model_dir)) == []
  (model_dir / 'ckpt-450.index').write_text('')
  (model_dir / 'checkpoint').write_text('model_checkpoint_path: "ckpt-450"\n')
  config = variants_lib.BY_NAME['sum'].experiment_config()
  _, step = training.resumed_params(config, str(model_dir))
  assert step == 450
  training._record_resume(str(model_dir), 300)  # pylint: disable=protected-access
  training._record_resume(str(model_dir), step)  # pylint: disable=protected-access
  assert training.resume_steps(str(model_dir)) == [300, 450]


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
