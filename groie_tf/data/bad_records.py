"""Skipping training records whose image or masks do not decode.

By default a record that does not decode (a JPEG cut short in a copy,
which Model Garden's converter does not notice) stops training with one
message (`groie_tf.training`). With `task.skip_bad_records`, the task reads
its training files through `skipping_dataset_fn` instead: each record is
decoded once more before Model Garden's own decoder runs (JPEG and PNG
decoding, milliseconds against a training step's seconds), a record whose
decoding fails is dropped, and the first record read after it logs
`Skipped N bad record(s) in <file> so far (the last: record i)` on stderr.
TensorFlow itself logs each dropped record's error as a warning.
"""

import sys
from typing import Callable

import tensorflow as tf


def skipping_dataset_fn(decode: Callable[[tf.Tensor], object]
                        ) -> Callable[[tf.Tensor], tf.data.Dataset]:
  """A Model Garden `dataset_fn` (file names -> serialized records) that
  drops the records on which `decode` fails.

  Args:
    decode: Model Garden's decoder's `decode` (a serialized tf.Example ->
      tensors); only whether it raises matters.

  Returns:
    A function of one file name or a vector of them (as Model Garden's
    `InputReader` calls its `dataset_fn`).
  """

  def one_file(path: tf.Tensor) -> tf.data.Dataset:
    def decodes(index, record):
      # A data dependency on every decoded tensor: tf.data's function
      # optimisation prunes ops that only a control dependency needs.
      sizes = [tf.size(t, tf.int64) for t in tf.nest.flatten(decode(record))]
      return index, record, tf.add_n(sizes)

    def count_gaps(state, element):
      expected, skipped = state
      index, record, _ = element
      skipped += index - expected  # records dropped before this one
      report = tf.cond(
          index > expected,
          lambda: tf.print(tf.strings.format(
              'Skipped {} bad record(s) in {} so far (the last: record {})',
              (skipped, path, index - 1)), output_stream=sys.stderr),
          tf.no_op)
      with tf.control_dependencies([report]):
        return (index + 1, skipped), tf.identity(record)

    records = tf.data.TFRecordDataset(path).enumerate()
    kept = records.map(decodes).ignore_errors(log_warning=True)
    zero = tf.constant(0, tf.int64)
    return kept.scan((zero, zero), count_gaps)

  def dataset_fn(paths) -> tf.data.Dataset:
    paths = tf.reshape(tf.convert_to_tensor(paths), [-1])
    return tf.data.Dataset.from_tensor_slices(paths).flat_map(one_file)

  return dataset_fn
