"""Model Garden's experiment runner, with workers that resume together.

In multi-worker training every worker saves when the chief does (reading a
variable can take part in an all-reduce, so all must join). Model Garden
gives each non-chief worker a new `tempfile.mkdtemp()` for this: restarted,
the chief restores its last step while the other workers find nothing and
start from step 0, their collectives no longer line up, and both crash
("Collective instance ... expected type 1 and data_type 1 but got ... 9").
Each run also left a full checkpoint in /tmp. Here a non-chief worker
restores the chief's latest checkpoint and writes its own copies to a
scratch directory that `ExperimentRunner.cleanup` removes.
"""

import shutil
import tempfile
from typing import Optional

from absl import logging
import tensorflow as tf
from official.core import train_lib


class WorkerCheckpointManager(tf.train.CheckpointManager):
  """A non-chief worker's checkpoints: restored from the chief's directory,
  written to a scratch directory (`cleanup` removes it)."""

  def __init__(self, checkpoint: tf.train.Checkpoint, chief_directory: str,
               **kwargs):
    self._scratch = tempfile.mkdtemp(prefix='groie_worker_checkpoint_')
    super().__init__(checkpoint, directory=self._scratch, max_to_keep=1,
                     **kwargs)
    self._chief_directory = chief_directory

  def restore_or_initialize(self) -> Optional[str]:
    latest = tf.train.latest_checkpoint(self._chief_directory)
    if latest is None:
      return super().restore_or_initialize()
    self.checkpoint.restore(latest)
    logging.info('Worker restored the chief\'s checkpoint %s.', latest)
    return latest

  def cleanup(self) -> None:
    shutil.rmtree(self._scratch, ignore_errors=True)


class ExperimentRunner(train_lib.OrbitExperimentRunner):
  """`OrbitExperimentRunner` whose non-chief workers resume with the chief."""

  def _maybe_build_checkpoint_manager(
      self) -> Optional[tf.train.CheckpointManager]:
    if not self.trainer.checkpoint or self.strategy.extended.should_checkpoint:
      return super()._maybe_build_checkpoint_manager()
    return WorkerCheckpointManager(
        self.trainer.checkpoint, chief_directory=self.model_dir,
        step_counter=self.trainer.global_step,
        checkpoint_interval=self.params.trainer.checkpoint_interval,
        init_fn=self.trainer.initialize)

  def cleanup(self) -> None:
    """Removes a non-chief worker's scratch checkpoints."""
    if isinstance(self.checkpoint_manager, WorkerCheckpointManager):
      self.checkpoint_manager.cleanup()
