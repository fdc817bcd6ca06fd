"""The variants of the built-in data set's ablation (`ablation.py`).

Each variant is one of the two shapes experiments (the README's main job
and its stock twin) with its RoI extractors changed in both branches, box
and mask; model, data and schedule stay the main job's. Beside each, the
paper's corresponding row: box AP of Faster R-CNN R50-FPN on COCO (Tables
I-IV, and Table V's GRoIE row), and mask AP of Mask R-CNN (Table V) where the
paper has one. The paper's numbers are COCO's; ours are on a small synthetic
set trained from scratch, so only the order of the rows compares.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from official.core import config_definitions as cfg
from official.core import exp_factory

from groie_tf import registry_imports  # pylint: disable=unused-import

# At 256 px the FPN rule's 224 px (COCO-sized inputs of 800-1333 px) sends
# every RoI to P2 or P3. A quarter of it, as the inputs are about a quarter
# of COCO's, sends RoIs of 28, 56 and 112 px and more to P3, P4 and P5.
FAIR_CANONICAL_SIZE = 56.0


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the ablation.

  Attributes:
    name: the row's name, also the run folders' prefix.
    experiment: the registered experiment it starts from.
    override: the config delta (a nested dict, as in a YAML file).
    description: what the row changes, in one sentence.
    paper_box_ap: the paper's box AP of the corresponding row, or None.
    paper_mask_ap: the paper's mask AP, or None.
    paper_row: where the paper's numbers come from.
  """
  name: str
  experiment: str
  override: Mapping[str, Any]
  description: str
  paper_box_ap: Optional[float] = None
  paper_mask_ap: Optional[float] = None
  paper_row: str = ''

  def experiment_config(self) -> cfg.ExperimentConfig:
    """The registered experiment with this variant's delta (unvalidated:
    the caller may override more first)."""
    config = exp_factory.get_exp_config(self.experiment)
    config.override(self.override, is_strict=True)
    return config


def _both_branches(**block) -> Dict[str, Any]:
  """The same GRoIE block in the box and the mask branch."""
  return {'task': {'model': {'box_groie': dict(block),
                             'mask_groie': dict(block)}}}


_GROIE = 'groie_maskrcnn_shapes'
_NO_MODULES = dict(pre_processing='none', post_processing='none')
_PAPER_MODULES = dict(pre_processing='conv5x5', post_processing='attention')

VARIANTS: Tuple[Variant, ...] = (
    Variant(
        'stock', 'maskrcnn_shapes', {},
        "Model Garden's MultilevelROIAligner: one level per RoI by FPN's "
        'rule at 224 px (P2 or P3 here), one sample per bin.',
        36.5, 34.1, 'Table I baseline; Table V Mask R-CNN'),
    Variant(
        'fair_rule', _GROIE,
        _both_branches(level_selection='heuristic',
                       canonical_size=FAIR_CANONICAL_SIZE, **_NO_MODULES),
        'One level per RoI by FPN\'s rule scaled to the input (56 px at P4, '
        "so P2-P5 are used), mmdetection's RoIAlign (2x2 samples per bin).",
        36.5, 34.1, 'Table I baseline; Table V Mask R-CNN'),
    Variant(
        'random', _GROIE,
        _both_branches(level_selection='random', **_NO_MODULES),
        'One uniformly random level per RoI, in training and evaluation.',
        34.8, None, 'Table I random'),
    Variant(
        'sum', _GROIE, _both_branches(**_NO_MODULES),
        'All levels P2-P5 summed, no modules.',
        36.8, None, 'Tables I-II sum'),
    Variant(
        'sum_pre_conv5x5', _GROIE,
        _both_branches(pre_processing='conv5x5', post_processing='none'),
        'All levels, a shared 5x5 conv + ReLU on each, summed.',
        37.2, None, 'Table III conv 5x5'),
    Variant(
        'groie', _GROIE, {},
        "The paper's GRoIE (the main job): all levels, 5x5 conv, sum, "
        "attention '0100'.",
        37.5, 35.8, 'Table V Faster R-CNN / Mask R-CNN + GRoIE'),
    Variant(
        'fair_rule_with_modules', _GROIE,
        _both_branches(level_selection='heuristic',
                       canonical_size=FAIR_CANONICAL_SIZE, **_PAPER_MODULES),
        "Capacity control (in no paper): the fair rule's one level with "
        "GRoIE's 5x5 conv and attention, so that only 'all levels' differs "
        'from groie.'),
)

BY_NAME = {variant.name: variant for variant in VARIANTS}
