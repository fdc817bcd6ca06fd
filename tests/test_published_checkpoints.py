"""The published models through the converter at full size (minutes).

`tests/test_convert_mmdet_checkpoint.py` has the fast part; this file
builds each of the nine published models at full width from a state dict
of its real names and shapes (random values), and exports a converted
checkpoint.

Mutations that fail here: a published model's key left unmapped (the
converter then refuses it), COCO's class columns shifted by one.
"""

import sys

import numpy as np
import pytest

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.conversion import convert
from groie_tf.conversion import published
from groie_tf.errors import CheckpointError
from groie_tf.serving import predict
from tests import mmdet_published
from tests import mmdet_stages

PUBLISHED_SHAPES = mmdet_published.published_shapes()

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('name', sorted(PUBLISHED_SHAPES))
def test_every_key_of_each_published_model_maps_at_full_width(name):
  """Full-width state dicts of the published shapes (random values): the
  converter's experiment for each builds a model whose every variable one
  of them sets, and no key is left over."""
  rng = np.random.default_rng(0)
  state_dict = {key: rng.standard_normal(shape).astype(np.float32)
                for key, shape in PUBLISHED_SHAPES[name].items()}
  meta = {'CLASSES': published.COCO_CLASS_NAMES}
  model = published.recognise(list(state_dict), meta)
  params = convert.experiment_params(model, state_dict, meta)
  assert params.task.model.num_classes == 91
  detector = convert.build_converted(params, state_dict)
  # COCO's first label (person) is category id 1, its last (toothbrush) 90.
  (head,) = detector.detection_head
  kernel = head._classifier.kernel.numpy()  # pylint: disable=protected-access
  weight = state_dict['roi_head.bbox_head.fc_cls.weight']
  np.testing.assert_array_equal(kernel[:, 90], weight[79])
  np.testing.assert_array_equal(kernel[:, 1], weight[0])
  del state_dict[sorted(state_dict)[-1]]
  with pytest.raises(CheckpointError):
    convert.build_converted(params, state_dict)


def test_a_converted_saved_model_detects_what_mmdetection_detected(tmp_path):
  """`--export_dir`: the SavedModel, given the fixture's photo (the test
  scale set to its size, so mmdetection's resize is the identity), returns
  mmdetection's detections and masks."""
  export_dir = tmp_path / 'export'
  result = mmdet_published.run_cli(
      f'--checkpoint={mmdet_published.REDUCED_PTH}', f'--export_dir={export_dir}',
      f'--config_file={mmdet_published.reduced_config_file(tmp_path)}',
      '--params_override=task.model.test_scale=[130,90]')
  assert result.returncode == 0, result.stderr[-3000:]
  fixture = mmdet_stages.load_fixture(mmdet_published.REDUCED)
  detect = predict.load_detector(str(export_dir / 'saved_model'))
  detections = detect(fixture['in/image_uint8'])
  count = int(detections['num_detections'])
  want = fixture['det_bboxes']
  assert count == len(want)
  np.testing.assert_array_equal(detections['detection_classes'][:count] - 1,
                                fixture['det_labels'])
  np.testing.assert_allclose(
      detections['detection_boxes'][:count][:, [1, 0, 3, 2]], want[:, :4],
      atol=mmdet_stages.BOX_TOLERANCE_PX)
  np.testing.assert_allclose(detections['detection_scores'][:count],
                             want[:, 4], atol=mmdet_stages.SCORE_TOLERANCE)
  np.testing.assert_allclose(
      detections['detection_masks'][:count],
      1 / (1 + np.exp(-fixture['mask_pred'])),
      atol=mmdet_stages.SCORE_TOLERANCE)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
