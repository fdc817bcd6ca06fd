"""Exports a trained GRoIE detector as a SavedModel for serving.

    python export_saved_model.py --experiment=groie_maskrcnn_shapes \
        --checkpoint_path=/tmp/groie_maskrcnn_shapes \
        --export_dir=/tmp/groie_maskrcnn_shapes/export \
        --input_type=image_tensor --input_image_size=256,256

Flags follow Model Garden's exporter. The model is built from the experiment
with GRoIE (Model Garden's own exporter would silently build the stock
model), and a checkpoint whose variables do not match it is refused. The
SavedModel's `serving_default` signature returns `detection_boxes`,
`detection_scores`, `detection_classes`, `num_detections`, `detection_masks`
and `image_info`.
"""

from absl import flags

from groie_tf import cli
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import loading
from groie_tf.serving import export

_EXPERIMENT = flags.DEFINE_string('experiment', None,
                                  'The registered experiment trained.')
_CONFIG_FILE = flags.DEFINE_multi_string(
    'config_file', None, 'YAML deltas applied in order, as in training.')
_PARAMS_OVERRIDE = flags.DEFINE_string('params_override', '',
                                       'Overrides applied last, as in training.')
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None,
    'A checkpoint, or a model_dir (its latest checkpoint).')
_EXPORT_DIR = flags.DEFINE_string(
    'export_dir', None, 'Gets saved_model/, checkpoint/ and params.yaml.')
_INPUT_TYPE = flags.DEFINE_enum('input_type', 'image_tensor',
                                list(export.INPUT_TYPES),
                                'What the serving signature takes.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None,
                                   'A fixed batch size; any if unset.')
_INPUT_IMAGE_SIZE = flags.DEFINE_string(
    'input_image_size', None,
    'height,width of the model input; the experiment\'s if unset.')


def main(_):
  params = loading.load_experiment(
      _EXPERIMENT.value, _CONFIG_FILE.value or (), _PARAMS_OVERRIDE.value)
  size = ([int(v) for v in _INPUT_IMAGE_SIZE.value.split(',')]
          if _INPUT_IMAGE_SIZE.value else None)
  path = export.export(params, _CHECKPOINT_PATH.value, _EXPORT_DIR.value,
                       input_type=_INPUT_TYPE.value,
                       batch_size=_BATCH_SIZE.value, input_image_size=size,
                       experiment=_EXPERIMENT.value)
  print(f'SavedModel written to {path}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['experiment', 'checkpoint_path', 'export_dir'])
  cli.run(main)
