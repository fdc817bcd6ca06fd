"""mmdetection checkpoints into the mmdetection layout
(`groie_tf.modeling.mmdetection_layout`)."""
