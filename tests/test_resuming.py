"""A resumed run does not replay the data its first run already trained on."""

import hashlib
import sys

import pytest
from official.core import task_factory

from groie_tf import training
from tests.tiny_experiment import tiny_experiment


def _fake_checkpoint(model_dir, step):
  model_dir.mkdir(exist_ok=True)
  (model_dir / 'checkpoint').write_text(
      f'model_checkpoint_path: "ckpt-{step}"\n')
  for suffix in ('.index', '.data-00000-of-00001'):
    (model_dir / f'ckpt-{step}{suffix}').write_bytes(b'')


def _first_batch_digest(params):
  task = task_factory.get_task(params.task)
  images, labels = next(iter(task.build_inputs(task.task_config.train_data)))
  digest = hashlib.sha256(images.numpy().tobytes())
  digest.update(labels['gt_boxes'].numpy().tobytes())
  return digest.hexdigest()


def test_a_new_run_keeps_its_seeds(tiny_shapes, tmp_path):
  params = tiny_experiment(tiny_shapes)
  resumed, step = training.resumed_params(params, str(tmp_path / 'new'))
  assert step == 0 and resumed is params


def test_a_resumed_run_is_reseeded_per_step(tiny_shapes, tmp_path):
  params = tiny_experiment(tiny_shapes)
  params.override({'task': {'train_data': {'seed': 11}}})
  seeds = set()
  for step in (3, 4):
    model_dir = tmp_path / f'run{step}'
    _fake_checkpoint(model_dir, step)
    resumed, found = training.resumed_params(params, str(model_dir))
    assert found == step
    seeds.add((resumed.task.seed, resumed.task.train_data.seed))
    # The same resume step gives the same seeds: reproducible.
    again, _ = training.resumed_params(params, str(model_dir))
    assert (again.task.seed, again.task.train_data.seed) in seeds
  assert len(seeds) == 2
  assert all(params.task.seed not in s and 11 not in s for s in seeds)


def test_the_resumed_data_order_differs_and_a_new_run_repeats(tiny_shapes,
                                                              tmp_path):
  """Two fresh starts see the same first batch (seeded); a resume does not
  see it again.

  Random flips are off: they run in a parallel map, where a stateful random
  op serves elements in thread order, which is not reproducible. The
  shuffle order is.
  """
  params = tiny_experiment(tiny_shapes)
  params.override({'task': {'train_data': {'parser': {
      'aug_rand_hflip': False}}}})
  fresh = [_first_batch_digest(params) for _ in range(2)]
  _fake_checkpoint(tmp_path / 'run', 2)
  resumed, _ = training.resumed_params(params, str(tmp_path / 'run'))
  assert fresh[0] == fresh[1]
  assert _first_batch_digest(resumed) != fresh[0]


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
