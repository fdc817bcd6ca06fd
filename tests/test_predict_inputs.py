"""predict.py's inputs: users' images as they come, outputs that never clash."""

import io
import re
import sys

import numpy as np
from PIL import Image
import pytest

from groie_tf.serving import predict


def test_a_16_bit_greyscale_png_keeps_its_range(tmp_path):
  ramp = np.linspace(0, 65535, 12 * 8).reshape(8, 12).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / 'depth.png')
  image = predict.read_image(str(tmp_path / 'depth.png'))
  assert image.shape == (8, 12, 3) and image.dtype == np.uint8
  expected = np.round(ramp / 257).astype(np.uint8)
  np.testing.assert_array_equal(image[..., 1], expected)  # not all white
  assert image.min() == 0 and image.max() == 255


def test_exif_orientation_is_applied(tmp_path):
  """A phone's portrait photo: stored landscape with 'rotate 90' in EXIF."""
  stored = np.zeros((20, 30, 3), np.uint8)
  stored[:, :5] = 255  # a white band on the stored image's left
  picture = Image.fromarray(stored)
  exif = picture.getexif()
  exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
  picture.save(tmp_path / 'phone.jpg', exif=exif, quality=95)
  image = predict.read_image(str(tmp_path / 'phone.jpg'))
  assert image.shape == (30, 20, 3)  # portrait, as displayed
  assert image[:5].mean() > 200 and image[10:].mean() < 50  # band on top


def test_a_truncated_image_raises_oserror(tmp_path):
  buffer = io.BytesIO()
  Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, 'JPEG')
  (tmp_path / 'cut.jpg').write_bytes(buffer.getvalue()[:300])
  with pytest.raises(OSError):
    predict.read_image(str(tmp_path / 'cut.jpg'))


def test_webp_is_read_and_other_files_are_reported(tmp_path, caplog):
  Image.fromarray(np.full((6, 7, 3), 90, np.uint8)).save(tmp_path / 'a.webp',
                                                         lossless=True)
  (tmp_path / 'notes.txt').write_text('not an image')
  with caplog.at_level('WARNING', logger='absl'):
    paths = predict.image_paths(str(tmp_path))
  assert [p.split('/')[-1] for p in paths] == ['a.webp']
  # Both CLIs that read images (predict.py, analyze_levels.py) say so.
  assert re.search(r'Skipping 1 file\(s\) without an image extension .*'
                   r'notes.txt', caplog.text)
  np.testing.assert_array_equal(predict.read_image(paths[0]), 90)


def test_output_names_are_unique():
  paths = ['/d/x/a.jpg', '/d/x/a.png', '/d/x/b.jpg', '/d/y/c.jpg',
           '/d/z/c.jpg']
  assert predict.output_names(paths) == [
      'a.jpg.png', 'a.png.png', 'b.png', 'y__c.jpg.png', 'z__c.jpg.png']


def test_the_best_label_is_drawn_on_top():
  image = np.full((60, 80, 3), 255, np.uint8)
  no_mask = np.zeros((60, 80), bool)
  # Two boxes with the same corner: their labels overlap exactly.
  instances = [
      {'box': [10.0, 30.0, 40.0, 20.0], 'score': 0.9, 'class_id': 1,
       'mask': no_mask},
      {'box': [10.0, 30.0, 50.0, 25.0], 'score': 0.4, 'class_id': 2,
       'mask': no_mask},
  ]
  picture = np.asarray(predict.draw(image, instances, {1: 'a', 2: 'b'}))
  best = np.array(predict._color(1)).astype(np.uint8)  # pylint: disable=protected-access
  label_pixels = picture[22:29, 11:14].reshape(-1, 3)  # the label's fill
  assert (np.abs(label_pixels.astype(int) - best).max(axis=1) <= 1).any()
  worst = np.array(predict._color(2)).astype(np.uint8)  # pylint: disable=protected-access
  assert not (np.abs(label_pixels.astype(int) - worst).max(axis=1) <= 1).any()


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
