"""SavedModel export: GRoIE survives it, it stands alone, bad checkpoints fail."""

import io
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
from pycocotools import coco
import pytest
import tensorflow as tf
import tf_keras
from official.core import task_factory

from groie_tf.data import shapes
from groie_tf.layers import GRoIE
from groie_tf.modeling import gc_checkpoint
from groie_tf.modeling import gc_resnet
from groie_tf.modeling import grid_rcnn_model
from groie_tf.serving import export
from groie_tf.serving import predict
from tests import layer_contract
from tests.tiny_experiment import tiny_experiment
from tests.tiny_experiment import tiny_grid_experiment

# Trains, exports or benchmarks models: minutes (`pytest -m "not slow"`
# skips them).
pytestmark = pytest.mark.slow

_OUTPUTS = ('detection_boxes', 'detection_scores', 'detection_classes',
            'num_detections', 'detection_masks')


def _write_model_checkpoint(shapes_data, groie, path):
  config = tiny_experiment(shapes_data, groie=groie)
  model = task_factory.get_task(config.task).build_model()
  return config, tf.train.Checkpoint(model=model).write(path)


@pytest.fixture(scope='module')
def groie_checkpoint(tiny_shapes, tmp_path_factory):
  """A GRoIE model's weights, with gamma != 0 so attention is not identity."""
  config = tiny_experiment(tiny_shapes, groie=True)
  tf_keras.utils.set_random_seed(0)  # the same weights in every run
  model = task_factory.get_task(config.task).build_model()
  for layer in (model.roi_aligner, model.mask_roi_aligner):
    layer.post_module.gamma.assign([0.7])
  path = tf.train.Checkpoint(model=model).write(
      str(tmp_path_factory.mktemp('ckpt') / 'ckpt'))
  return config, path


@pytest.fixture(scope='module')
def exported(groie_checkpoint, tmp_path_factory):
  """The GRoIE checkpoint exported for each input type."""
  config, checkpoint = groie_checkpoint
  root = tmp_path_factory.mktemp('exports')
  return {kind: export.export(config, checkpoint, str(root / kind),
                              input_type=kind)
          for kind in export.INPUT_TYPES}


def _images(tiny_shapes, count=2):
  """`count` validation images of the built-in set, [count, S, S, 3] uint8."""
  folder = os.path.join(shapes.dataset_dir(tiny_shapes), 'val')
  names = sorted(os.listdir(folder))[:count]
  return np.stack([np.asarray(Image.open(os.path.join(folder, n)))
                   for n in names])


def _encode(images):
  encoded = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='PNG')
    encoded.append(buffer.getvalue())
  return encoded


def _serving_input(input_type, images):
  if input_type == 'image_tensor':
    return tf.constant(images)
  if input_type == 'image_bytes':
    return tf.constant(_encode(images))
  examples = [tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[data]))})).SerializeToString()
              for data in _encode(images)]
  return tf.constant(examples)


@pytest.mark.parametrize('input_type', export.INPUT_TYPES)
def test_saved_model_detects_what_the_in_process_model_does(
    groie_checkpoint, exported, tiny_shapes, input_type):
  config, checkpoint = groie_checkpoint
  saved_model_dir = exported[input_type]
  images = _images(tiny_shapes)

  # In process: the GRoIE module restored from the checkpoint, on the
  # decoded images (every input type decodes to these exact pixels).
  module = export.GRoIEDetectionModule(
      params=config, batch_size=None,
      input_image_size=config.task.model.input_size[:2], num_channels=3)
  assert isinstance(module.model.roi_aligner, GRoIE)
  tf.train.Checkpoint(model=module.model).read(checkpoint).expect_partial()
  expected = module.serve(tf.constant(images))

  served = tf.saved_model.load(saved_model_dir).signatures['serving_default'](
      _serving_input(input_type, images))
  assert float(np.max(expected['detection_scores'])) > 0  # detects something
  # The SavedModel runs the graph TF optimised at export, which sums in
  # another order: float32 rounding reached 1.1e-5 on a mask probability of
  # 0.40 in CI (2.9e-5 relative), hence rtol. A model that lost GRoIE or a
  # weight would differ by orders of magnitude more.
  for name in _OUTPUTS:
    np.testing.assert_allclose(served[name].numpy(),
                               expected[name].numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=name)



def _assert_served_as_in_process(config, model, tiny_shapes, tmp_path,
                                 outputs):
  """Exports `model`'s weights; the SavedModel's `outputs` equal those of
  the export module built in process. Returns that module's model."""
  checkpoint = tf.train.Checkpoint(model=model).write(str(tmp_path / 'ckpt'))
  saved_model_dir = export.export(config, checkpoint, str(tmp_path / 'out'))
  module = export.GRoIEDetectionModule(
      params=config, batch_size=None,
      input_image_size=config.task.model.input_size[:2], num_channels=3)
  tf.train.Checkpoint(model=module.model).read(checkpoint).expect_partial()
  images = _images(tiny_shapes)
  expected = module.serve(tf.constant(images))
  served = tf.saved_model.load(saved_model_dir).signatures['serving_default'](
      tf.constant(images))
  assert float(np.max(expected['detection_scores'])) > 0
  for name in outputs:
    np.testing.assert_allclose(served[name].numpy(), expected[name].numpy(),
                               rtol=1e-4, atol=1e-4, err_msg=name)
  return module.model


def test_a_gcnet_model_serves_what_it_computes(tiny_shapes, tmp_path):
  """GC-Net + GRoIE through the same exporter, context blocks not the
  identity (random last convs), attention gamma != 0."""
  config = tiny_experiment(tiny_shapes, groie=True, gc_backbone=True)
  tf_keras.utils.set_random_seed(1)
  model = task_factory.get_task(config.task).build_model()
  blocks = gc_checkpoint.context_blocks(model.backbone)
  assert len(blocks) == 6
  for index, block in enumerate(blocks):
    layer_contract.randomize_weights(block, seed=index, scale=0.1)
  for layer in (model.roi_aligner, model.mask_roi_aligner):
    layer.post_module.gamma.assign([0.7])
  served = _assert_served_as_in_process(config, model, tiny_shapes, tmp_path,
                                        _OUTPUTS)
  assert isinstance(served.backbone, gc_resnet.GCResNet)


def test_a_grid_rcnn_model_serves_its_refined_boxes(tiny_shapes, tmp_path):
  """Grid R-CNN + GRoIE through the same exporter: the served boxes are the
  grid's vote, as in process."""
  config = tiny_grid_experiment(tiny_shapes)
  tf_keras.utils.set_random_seed(2)
  model = task_factory.get_task(config.task).build_model()
  for layer in (model.roi_aligner, model.grid_roi_aligner):
    layer.post_module.gamma.assign([0.7])
  served = _assert_served_as_in_process(
      config, model, tiny_shapes, tmp_path,
      ('detection_boxes', 'detection_scores', 'detection_classes',
       'num_detections'))
  assert isinstance(served, grid_rcnn_model.GridRCNNModel)


def test_an_mmdetection_layout_model_serves_what_it_computes(tiny_shapes,
                                                             tmp_path):
  """The mmdetection layout through the same exporter: mmdetection's test
  resize inside the SavedModel (an image of another size gets its own
  canvas), and the SavedModel names mmdetection's mask paste, which
  predict.py then uses."""
  config = tiny_experiment(tiny_shapes, groie=True, mmdetection=True)
  config.task.model.test_scale = [160, 96]  # not the training size
  tf_keras.utils.set_random_seed(3)
  model = task_factory.get_task(config.task).build_model()
  for layer in (model.roi_aligner, model.mask_roi_aligner):
    layer.post_module.gamma.assign([0.7])
  _assert_served_as_in_process(config, model, tiny_shapes, tmp_path,
                               _OUTPUTS)
  detect = predict.load_detector(str(tmp_path / 'out' / 'saved_model'))
  assert detect.mask_paste == 'mmdetection'
  image = _images(tiny_shapes, count=1)[0][:100, :70]  # portrait, 100 x 70
  detections = detect(image)
  # Resized by its short side to 96 x 137 (the long side would give 160):
  # the record says so, and the boxes come back in the image's pixels.
  np.testing.assert_allclose(detections['image_info'][1], [137, 96])
  count = int(detections['num_detections'])
  boxes = detections['detection_boxes'][:count]
  assert count and np.all(boxes >= 0) and np.all(boxes[:, 2] <= 100) and \
      np.all(boxes[:, 3] <= 70)
  instances = predict.to_instances(detections, 100, 70, 0.0,
                                   detect.mask_paste)
  assert instances and instances[0]['mask'].shape == (100, 70)


def test_saved_model_runs_without_groie_tf_or_model_garden(
    exported, tiny_shapes, tmp_path):
  """As TF Serving would: only TensorFlow is importable."""
  saved_model_dir = exported['image_tensor']
  images = _images(tiny_shapes)
  np.save(tmp_path / 'images.npy', images)
  script = textwrap.dedent(f'''
      import importlib.abc, json, sys

      class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
          if name.split('.')[0] in ('groie_tf', 'official'):
            raise ImportError(name + ' is blocked')

      sys.meta_path.insert(0, Blocked())
      for name in ('groie_tf', 'official'):
        try:
          __import__(name)
          raise SystemExit(name + ' was importable')
        except ImportError:
          pass
      import numpy as np
      import tensorflow as tf
      serve = tf.saved_model.load({saved_model_dir!r}).signatures[
          'serving_default']
      outputs = serve(tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
      print(json.dumps({{k: v.numpy().tolist() for k, v in outputs.items()}}))
  ''')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  standalone = json.loads(result.stdout.strip().splitlines()[-1])
  served = tf.saved_model.load(saved_model_dir).signatures['serving_default'](
      tf.constant(images))
  for name in _OUTPUTS:
    np.testing.assert_allclose(standalone[name], served[name].numpy(),
                               atol=1e-5, err_msg=name)

  shown = subprocess.run(
      [sys.executable, '-m', 'tensorflow.python.tools.saved_model_cli',
       'show', '--all', '--dir', saved_model_dir],
      capture_output=True, text=True, timeout=300)
  assert shown.returncode == 0, shown.stderr[-2000:]
  signature = shown.stdout.split("signature_def['serving_default']")[1]
  for name in _OUTPUTS + ('image_info',):
    assert f"outputs['{name}']" in signature


@pytest.mark.parametrize('trained, exported, message', [
    (False, True, r'the model has \d+ variable\(s\) the checkpoint lacks: '
                  r'mask_roi_aligner/'),
    (True, False, r'the checkpoint has \d+ variable\(s\) the model lacks: '
                  r'mask_roi_aligner/'),
])
def test_a_checkpoint_of_another_model_is_refused(tiny_shapes, tmp_path,
                                                  trained, exported, message):
  """A baseline checkpoint with the GRoIE experiment, and the reverse."""
  _, checkpoint = _write_model_checkpoint(tiny_shapes, trained,
                                          str(tmp_path / 'ckpt'))
  config = tiny_experiment(tiny_shapes, groie=exported)
  with pytest.raises(ValueError, match=r'does not fit experiment shapes_test: '
                     + message):
    export.export(config, checkpoint, str(tmp_path / 'export'),
                  experiment='shapes_test')
  assert not os.path.exists(tmp_path / 'export' / 'saved_model')


def test_a_checkpoint_with_other_head_shapes_is_refused_by_name(tiny_shapes,
                                                                 tmp_path):
  """Trained with 5 classes, exported with 6: one message, not 300 lines of
  restore warnings."""
  _, checkpoint = _write_model_checkpoint(tiny_shapes, True,
                                          str(tmp_path / 'ckpt'))
  config = tiny_experiment(tiny_shapes)
  config.override({'task': {'model': {'num_classes': 6}}})
  with pytest.raises(ValueError, match=(
      r'does not fit the experiment: \d+ variable\(s\) have other shapes, '
      r'.*detection_head/_classifier/kernel \[\d+, 5\] in '
      r'the checkpoint, \[\d+, 6\] in the model.*task.model.num_classes')):
    export.export(config, checkpoint, str(tmp_path / 'export'))


def test_export_saved_model_py_exports_a_model_dir(tiny_shapes, tmp_path):
  """The command line: experiment + config file + a model_dir's checkpoint."""
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  config, _ = _write_model_checkpoint(tiny_shapes, True,
                                      str(tmp_path / 'model' / 'ckpt-1'))
  with open(tmp_path / 'model' / 'checkpoint', 'w') as f:
    f.write('model_checkpoint_path: "ckpt-1"\n')
  hyperparams.save_params_dict_to_yaml(config, str(tmp_path / 'params.yaml'))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, 'export_saved_model.py',
       '--experiment=groie_maskrcnn_shapes',
       f'--config_file={tmp_path / "params.yaml"}',
       f'--checkpoint_path={tmp_path / "model"}',
       f'--export_dir={tmp_path / "export"}', '--input_type=image_bytes'],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SavedModel written to' in result.stdout
  assert (f'Exporting the model of checkpoint {tmp_path / "model" / "ckpt-1"}'
          in result.stderr)
  assert (tmp_path / 'export' / 'saved_model' / 'saved_model.pb').exists()


def test_predict_loader_gives_the_same_detections_for_every_input_type(
    exported, tiny_shapes):
  image = _images(tiny_shapes, count=1)[0]
  tensor = predict.load_detector(exported['image_tensor'])(image)
  for kind in ('image_bytes', 'tf_example'):
    detections = predict.load_detector(exported[kind])(image)
    for name in _OUTPUTS:
      np.testing.assert_allclose(detections[name], tensor[name], atol=1e-5,
                                 err_msg=f'{kind}: {name}')


def test_an_enlarged_image_gets_the_same_detections_in_its_own_pixels(
    exported, tiny_shapes):
  """A non-square image, and the same enlarged 7x (each pixel a 7x7 block).

  Resizing the large one to the model input samples each block at its
  centre, so the model sees the same pixels, and must return the same
  detections with boxes 7x larger: the boxes are in pixels of the image
  given. Model Garden's own module returns both in the model input's frame.
  """
  image = _images(tiny_shapes, count=1)[0][:, :80]  # 128 x 80
  large = image.repeat(7, 0).repeat(7, 1)  # 896 x 560
  detect = predict.load_detector(exported['image_tensor'])
  small_out, large_out = detect(image), detect(large)
  count = int(small_out['num_detections'])
  assert count > 0 and int(large_out['num_detections']) == count
  for name in ('detection_scores', 'detection_classes', 'detection_masks'):
    np.testing.assert_allclose(large_out[name], small_out[name], atol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(large_out['detection_boxes'][:count],
                             7 * small_out['detection_boxes'][:count],
                             rtol=1e-5, atol=1e-3)
  assert (large_out['detection_boxes'][:count, 2::2] <= 896).all()
  assert (large_out['detection_boxes'][:count, 3::2] <= 560).all()


def test_predict_py_draws_pictures_and_writes_coco_results(exported,
                                                           tiny_shapes,
                                                           tmp_path):
  directory = shapes.dataset_dir(tiny_shapes)
  annotations = os.path.join(directory, 'instances_val.json')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, 'predict.py',
       f'--saved_model_dir={exported["image_tensor"]}',
       f'--images={os.path.join(directory, "val")}',
       f'--annotation_file={annotations}', f'--output_dir={tmp_path}',
       '--score_threshold=0'],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  # Loading RoIAlign's custom gradient, which serving never asks for.
  assert 'unsaved custom gradients' not in result.stderr
  pictures = sorted(p for p in os.listdir(tmp_path) if p.endswith('.png'))
  assert pictures == sorted(n.replace('.jpg', '.png')
                            for n in os.listdir(os.path.join(directory, 'val')))
  size = tiny_shapes.image_size
  assert Image.open(tmp_path / pictures[0]).size == (size, size)
  gt = coco.COCO(annotations)
  results = gt.loadRes(str(tmp_path / 'detections.json'))
  detections = results.loadAnns(results.getAnnIds())
  assert detections and {d['image_id'] for d in detections} <= set(
      gt.getImgIds())
  for detection in detections[:5]:  # masks decode at image size
    assert results.annToMask(detection).shape == (size, size)


def test_predict_py_skips_an_unreadable_image_and_writes_the_rest(
    exported, tiny_shapes, tmp_path):
  image = _images(tiny_shapes, count=1)[0]
  folder = tmp_path / 'in'
  folder.mkdir()
  Image.fromarray(image).save(folder / 'a.jpg')
  Image.fromarray(image[:100]).save(folder / 'a.png')  # same stem
  (folder / 'broken.jpg').write_bytes((folder / 'a.jpg').read_bytes()[:400])
  (folder / 'notes.txt').write_text('not an image')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, 'predict.py',
       f'--saved_model_dir={exported["image_bytes"]}', f'--images={folder}',
       f'--output_dir={tmp_path / "out"}', '--score_threshold=0'],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert re.search(r'Skipping \S*broken.jpg: ', result.stderr)
  assert 'error: 1 image(s) could not be read' in result.stderr
  assert re.search(r'Skipping 1 file\(s\) without an image extension .*'
                   r'notes.txt', result.stderr)
  written = sorted(os.listdir(tmp_path / 'out'))
  assert written == ['a.jpg.png', 'a.png.png', 'detections.json']
  assert Image.open(tmp_path / 'out' / 'a.png.png').size == (128, 100)
  detections = json.loads((tmp_path / 'out' / 'detections.json').read_text())
  assert {d['image_id'] for d in detections} == {1, 2}


def test_drawing_tints_masks_and_outlines_boxes():
  image = np.full((40, 60, 3), 200, np.uint8)
  mask = np.zeros((40, 60), bool)
  mask[10:20, 30:50] = True
  picture = np.asarray(predict.draw(
      image, [{'box': [28.0, 8.0, 24.0, 14.0], 'score': 0.9, 'class_id': 2,
               'mask': mask}], {2: 'star'}))
  assert (picture[15, 40] != image[15, 40]).any()  # inside the mask: tinted
  assert (picture[8, 40] != image[8, 40]).any()  # the box's top edge
  np.testing.assert_array_equal(picture[35, 5], image[35, 5])  # untouched


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
