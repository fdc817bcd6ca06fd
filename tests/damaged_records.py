"""TFRecord files with one damaged image, as a user's data may hold."""

import tensorflow as tf


def truncated_jpeg_copy(source: str, destination: str, index: int = 0) -> int:
  """Copies the TFRecord file `source` to `destination`, the image of
  record `index` replaced by the first half of its JPEG encoding.

  The image keeps its size, so only decoding it fails: TensorFlow's
  "jpeg::Uncompress failed", as a file cut short in a copy gives.

  Returns:
    The number of records copied.
  """
  count = 0
  with tf.io.TFRecordWriter(destination) as writer:
    for count, record in enumerate(tf.data.TFRecordDataset(source), 1):
      record = record.numpy()
      if count - 1 == index:
        example = tf.train.Example.FromString(record)
        features = example.features.feature
        image = tf.io.decode_image(features['image/encoded'].bytes_list.value[0],
                                   channels=3)
        jpeg = tf.io.encode_jpeg(image).numpy()
        features['image/encoded'].bytes_list.value[:] = [jpeg[:len(jpeg) // 2]]
        features['image/format'].bytes_list.value[:] = [b'jpeg']
        record = example.SerializeToString()
      writer.write(record)
  return count
