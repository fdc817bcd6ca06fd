"""Converts a GRoIE authors' mmdetection checkpoint into a groie-tf model.

    python convert_mmdet_checkpoint.py \
        --checkpoint=mask_rcnn_r50_fpn_groie_1x_coco_20200604_211715-50d90c74.pth \
        --output_dir=/tmp/mask_rcnn_groie --export_dir=/tmp/mask_rcnn_groie/export

`--checkpoint` is a `.pth` as mmdetection publishes it (read without
PyTorch) or a `.npz` of its state dict. The model is recognised from its
weights (and checked against the config its `meta` names, or `--config`).
`--output_dir` gets `ckpt-0` and `params.yaml`: `train.py` (evaluation,
fine-tuning through `task.init_checkpoint`) and `export_saved_model.py`
take it as a trained model_dir, with the printed `--experiment` and
`--config_file=<output_dir>/params.yaml`. `--export_dir` gets a SavedModel
for `predict.py` and TF Serving. A checkpoint with a key that is not mapped,
a variable that is not set, a tensor of another shape or an unknown config
is refused in one line (`error: ...`, exit status 2).
"""

import tempfile

from absl import flags

from groie_tf import cli
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.conversion import convert
from groie_tf.errors import ConfigError
from groie_tf.serving import export

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'An mmdetection .pth, or a .npz of its state dict.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Gets ckpt-0 and params.yaml (a model_dir).')
_EXPORT_DIR = flags.DEFINE_string(
    'export_dir', None, 'Gets a SavedModel (saved_model/), as '
    'export_saved_model.py writes it.')
_CONFIG = flags.DEFINE_string(
    'config', None, 'mmdetection\'s config name, if the checkpoint\'s meta '
    'does not name it (e.g. mask-rcnn_r50_fpn_groie_1x_coco).')
_CONFIG_FILE = flags.DEFINE_multi_string(
    'config_file', None, 'YAML deltas applied after the published config.')
_PARAMS_OVERRIDE = flags.DEFINE_string(
    'params_override', '', 'Overrides applied last.')


def main(_):
  if not _OUTPUT_DIR.value and not _EXPORT_DIR.value:
    raise ConfigError('give --output_dir, --export_dir or both.')
  with tempfile.TemporaryDirectory() as scratch:
    result = convert.convert(
        _CHECKPOINT.value, output_dir=_OUTPUT_DIR.value or scratch,
        config=_CONFIG.value, config_files=_CONFIG_FILE.value or (),
        params_override=_PARAMS_OVERRIDE.value)
    model = result.model
    print(f'{_CHECKPOINT.value}: {model.name} (experiment '
          f'{model.experiment}), converted in {result.seconds:.1f} s.')
    if _EXPORT_DIR.value:
      path = export.export(result.params, result.checkpoint, _EXPORT_DIR.value,
                           experiment=model.experiment)
      print(f'SavedModel: {path}')
  if _OUTPUT_DIR.value:
    print(f'Checkpoint: {result.checkpoint}\nEvaluate it on COCO val2017:\n'
          f'  python train.py --experiment={model.experiment} --mode=eval '
          f'--model_dir={_OUTPUT_DIR.value} \\\n'
          f'    --config_file={_OUTPUT_DIR.value}/params.yaml '
          '--params_override="task.validation_data.input_path='
          '<coco>/val*,task.annotation_file=<coco>/instances_val2017.json"')


if __name__ == '__main__':
  flags.mark_flags_as_required(['checkpoint'])
  cli.run(main)
