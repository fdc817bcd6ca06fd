"""Model Garden's experiment runner, with workers that resume together and
evaluation that reports its progress.

In multi-worker training every worker saves when the chief does (reading a
variable can take part in an all-reduce, so all must join). Model Garden
gives each non-chief worker a new `tempfile.mkdtemp()` for this: restarted,
the chief restores its last step while the other workers find nothing and
start from step 0, their collectives no longer line up, and both crash
("Collective instance ... expected type 1 and data_type 1 but got ... 9").
Each run also left a full checkpoint in /tmp. Here a non-chief worker
restores the chief's latest checkpoint and writes its own copies to a
scratch directory that `ExperimentRunner.cleanup` removes.

Model Garden's trainer reports nothing between the start and the end of an
evaluation (24 minutes on 50 images on a CPU). Its evaluation loop runs in
Python, a step at a time (Mask R-CNN's COCO evaluator gathers every step's
detections on the host), so `Trainer` tells an `EvaluationListener` about
each step.
"""

import shutil
import tempfile
from typing import Optional, Protocol

from absl import logging
import tensorflow as tf
from official.core import base_trainer
from official.core import train_lib
from official.core import train_utils


class EvaluationListener(Protocol):
  """What `Trainer` calls around the steps of an evaluation."""

  def begin(self) -> None:
    ...

  def step(self) -> None:
    ...

  def end(self) -> None:
    ...


class Trainer(base_trainer.Trainer):
  """Model Garden's trainer, telling `evaluation_listener` (if set) when an
  evaluation begins, after each of its steps, and when it ends."""

  evaluation_listener: Optional[EvaluationListener] = None

  def eval_begin(self):
    super().eval_begin()
    if self.evaluation_listener:
      self.evaluation_listener.begin()

  def eval_reduce(self, state=None, step_outputs=None):
    state = super().eval_reduce(state, step_outputs)
    if self.evaluation_listener:
      self.evaluation_listener.step()
    return state

  def eval_end(self, aggregated_logs=None):
    if self.evaluation_listener:
      self.evaluation_listener.end()
    return super().eval_end(aggregated_logs)


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
  """`OrbitExperimentRunner` whose non-chief workers resume with the chief,
  and whose trainer is `Trainer` (its listener is set by the caller)."""

  def _build_trainer(self, task, train: bool, evaluate: bool) -> Trainer:
    with self.strategy.scope():
      return train_utils.create_trainer(
          self.params, task, train=train, evaluate=evaluate,
          checkpoint_exporter=self._build_best_checkpoint_exporter(),
          trainer_cls=Trainer)

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
