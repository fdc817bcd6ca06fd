"""Turns the ablation's run records into `ablation.md`, JSON and a plot.

Everything is computed from the records alone (`sweep.load_records`), so
the report can be rebuilt from a clone without the checkpoints. Means and
standard deviations are over the seeds of a variant whose runs finished;
failed runs are listed, never averaged. Beside them, each variant minus the
baseline of the same seed, and training times per kind of machine.
"""

import json
import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

from groie_tf import training
from groie_tf.ablation import sweep
from groie_tf.ablation import variants as variants_lib
from groie_tf.modeling import builder

BOX_METRICS = training.BOX_METRICS
MASK_METRICS = training.MASK_METRICS
PLOT_NAME = 'ap_over_steps.png'
# The row every other is compared with seed by seed: today's baseline.
BASELINE = 'stock'


def extractor_parameters(variant: variants_lib.Variant) -> int:
  """Weights of the variant's RoI extractors, box and mask (0 for stock)."""
  model = variant.experiment_config().task.model
  channels = model.decoder.fpn.num_filters
  size = model.input_size[0]
  features = {str(level): tf.zeros([1, size // 2**level, size // 2**level,
                                    channels])
              for level in range(model.min_level, model.max_level + 1)}
  boxes = tf.constant([[[8.0, 8.0, 40.0, 48.0]]])
  total = 0
  for block, crop_size in (
      (model.box_groie, model.roi_aligner.crop_size),
      (model.mask_groie, model.mask_roi_aligner.crop_size)):
    if block is not None:
      layer = builder.groie_layer(block, crop_size)
      layer(features, boxes)
      total += layer.count_params()
  return total


def _mean_std(values: Sequence[float]) -> Dict[str, Any]:
  # pycocotools reports -1 for a size range without objects: no value.
  values = [v for v in values if v >= 0]
  return {'mean': statistics.fmean(values) if values else None,
          'std': statistics.stdev(values) if len(values) > 1 else None,
          'values': list(values)}


def _cost_by_machine(ok: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """Training time and speed of finished runs, one entry per kind of
  machine: a mean over machines of different speeds would measure the mix."""
  by_machine: Dict[str, List[Mapping[str, Any]]] = {}
  for r in ok:
    by_machine.setdefault(sweep.machine_label(r.get('machine')), []).append(r)
  return [{
      'machine': label,
      'seeds': [r['seed'] for r in runs],
      'training_minutes': _mean_std(
          [r['training_seconds'] / 60 for r in runs]),
      'median_steps_per_second': _mean_std(
          [r['median_steps_per_second'] for r in runs
           if r.get('median_steps_per_second')]),
  } for label, runs in sorted(by_machine.items())]


def summarize(records: Sequence[Mapping[str, Any]],
              variants: Sequence[variants_lib.Variant],
              parameters: Optional[Mapping[str, int]] = None
              ) -> List[Dict[str, Any]]:
  """One summary per variant with at least one record, in `variants` order
  (variants the records name but `variants` does not come last)."""
  by_variant: Dict[str, List[Mapping[str, Any]]] = {}
  for record in records:
    by_variant.setdefault(record['variant'], []).append(record)
  known = [v.name for v in variants]
  names = [n for n in known if n in by_variant] + sorted(
      n for n in by_variant if n not in known)
  summaries = []
  for name in names:
    runs = sorted(by_variant[name], key=lambda r: r['seed'])
    ok = [r for r in runs if r['status'] == 'ok']
    variant = variants_lib.BY_NAME.get(name)
    summaries.append({
        'variant': name,
        'description': variant.description if variant else '',
        'paper_box_ap': variant.paper_box_ap if variant else None,
        'paper_mask_ap': variant.paper_mask_ap if variant else None,
        'paper_row': variant.paper_row if variant else '',
        'seeds': [r['seed'] for r in ok],
        'failed_seeds': [r['seed'] for r in runs if r['status'] != 'ok'],
        'metrics': {m: _mean_std([r['final'][m] for r in ok
                                  if m in r['final']])
                    for m in BOX_METRICS + MASK_METRICS},
        'cost': _cost_by_machine(ok),
        'extractor_parameters': (parameters or {}).get(name),
    })
  return summaries


def against_baseline(records: Sequence[Mapping[str, Any]],
                     variants: Sequence[variants_lib.Variant],
                     baseline: str = BASELINE) -> List[Dict[str, Any]]:
  """Each variant's box and mask AP minus the baseline's of the same seed.

  Runs of one seed see the same images in the same order with the same
  flips (the input is deterministic and does not depend on the model), so
  a per-seed difference leaves out the part of the spread that the data
  order causes. A run resumed from a checkpoint was reseeded there
  (`resumed_at`), so from that step on its batches differ: such seeds are
  listed in 'resumed'. Variants in `variants` order; only seeds that both
  the variant and the baseline finished.
  """
  ok = {(r['variant'], r['seed']): r for r in records if r['status'] == 'ok'}
  base = {seed: run for (name, seed), run in ok.items() if name == baseline}
  out = []
  for name in [v.name for v in variants if v.name != baseline]:
    seeds = sorted(seed for (other, seed) in ok
                   if other == name and seed in base)
    if not seeds:
      continue
    entry: Dict[str, Any] = {
        'variant': name, 'baseline': baseline, 'seeds': seeds,
        'resumed': [seed for seed in seeds
                    if ok[(name, seed)].get('resumed_at')
                    or base[seed].get('resumed_at')]}
    for metric in ('AP', 'mask_AP'):
      differences = [ok[(name, seed)]['final'][metric]
                     - base[seed]['final'][metric] for seed in seeds]
      entry[metric] = {
          'per_seed': differences,
          'mean': statistics.fmean(differences),
          'std': (statistics.stdev(differences) if len(differences) > 1
                  else None),
          'seeds_ahead': sum(d > 0 for d in differences)}
    out.append(entry)
  return out


def _points(value: float) -> str:
  """An AP difference in AP points, signed: 0.039 -> '+3.9'."""
  return f'{100 * value:+.1f}'


def _cell(stats: Mapping[str, Any], digits: int = 3) -> str:
  if stats['mean'] is None:
    return '-'
  if stats['std'] is None:
    return f'{stats["mean"]:.{digits}f}'
  return f'{stats["mean"]:.{digits}f} ± {stats["std"]:.{digits}f}'


def _paper(value: Optional[float]) -> str:
  return '-' if value is None else f'{value:.1f}'


def markdown(summaries: Sequence[Mapping[str, Any]],
             records: Sequence[Mapping[str, Any]],
             plot_path: Optional[str],
             paired: Sequence[Mapping[str, Any]] = ()) -> str:
  """The report's text."""
  commits = sorted({r.get('commit') or '?' for r in records})
  code = f' (code at commit {", ".join(commits)})' if commits else ''
  lines = [
      '# Ablation on the built-in data set', '',
      f'Generated by `python ablation.py` from {len(records)} run record(s) '
      f'in `ablation/runs/`{code}; rebuild it '
      'with `python ablation.py --report_only`, do not edit it. The '
      "machines the runs trained on are listed under Cost.", '',
      "Each row trains the README's main job (same model, data and "
      'schedule) with other RoI extractors in both branches, box and mask; '
      'the seed sets the weight initialisation and the data order. Cells '
      'are mean ± sample standard deviation over the seeds listed, COCO '
      'metrics from pycocotools on the validation images. The paper '
      "columns are COCO's (box: Faster R-CNN R50-FPN, Tables I-V; mask: "
      'Mask R-CNN, Table V): compare the order of the rows, not the values.',
      '']
  for title, names, paper_key in (
      ('Box AP', BOX_METRICS, 'paper_box_ap'),
      ('Mask AP', MASK_METRICS, 'paper_mask_ap')):
    header = ['variant', 'seeds'] + [n.replace('mask_', '') for n in names]
    lines += [f'## {title}', '', '| ' + ' | '.join(
        header + [f'paper {title.split()[0].lower()} AP']) + ' |',
              '|' + ' --- |' * (len(header) + 1)]
    for s in summaries:
      seeds = ','.join(map(str, s['seeds'])) or 'none'
      lines.append('| ' + ' | '.join(
          [f'`{s["variant"]}`', seeds] +
          [_cell(s['metrics'][n]) for n in names] +
          [_paper(s[paper_key])]) + ' |')
    lines.append('')
  if paired:
    baseline = paired[0]['baseline']
    lines += [f'## Against `{baseline}`, seed by seed', '',
              f"Each variant's AP minus `{baseline}`'s with the same seed, in "
              'AP points. Runs of one seed train on the same batches, so '
              'these differences leave out the part of the spread that '
              'the data order causes (not the part the initialisation '
              'causes). "Ahead" counts the seeds where the variant is '
              'above. A seed marked * had a run resumed from a checkpoint, '
              'which reseeds the input from there on: its batches differ '
              'after that step.', '',
              '| variant | seeds | box AP, per seed | mean ± std | ahead '
              '| mask AP, per seed | mean ± std | ahead |',
              '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for entry in paired:
      cells = [f'`{entry["variant"]}`', ','.join(
          f'{seed}*' if seed in entry['resumed'] else str(seed)
          for seed in entry['seeds'])]
      for metric in ('AP', 'mask_AP'):
        stats = entry[metric]
        spread = ('' if stats['std'] is None
                  else f' ± {100 * stats["std"]:.1f}')
        cells += [', '.join(_points(d) for d in stats['per_seed']),
                  _points(stats['mean']) + spread,
                  f'{stats["seeds_ahead"]} of {len(entry["seeds"])}']
      lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines += ['## Cost', '',
            '| variant | RoI extractor weights | machine | seeds '
            '| training steps/s (median) | training time, min |',
            '| --- | --- | --- | --- | --- | --- |']
  for s in summaries:
    weights = s['extractor_parameters']
    for cost in s['cost']:
      lines.append(
          f'| `{s["variant"]}` | '
          f'{"-" if weights is None else f"{weights:,}"} | '
          f'{cost["machine"]} | {",".join(map(str, cost["seeds"]))} | '
          f'{_cell(cost["median_steps_per_second"], 2)} | '
          f'{_cell(cost["training_minutes"], 1)} |')
  lines += ['', 'Training time sums the time of the training loops from '
            "the runs' summaries (evaluation and start-up left out), for "
            'each kind of machine apart. Runs that shared the machine with '
            'other work are slower too: compare times only between runs '
            'made alike.', '']
  if plot_path:
    lines += ['## AP over training', '',
              f'![AP over training]({plot_path})', '',
              "Mean over the seeds at each evaluation; the band spans the "
              'lowest and highest seed (as the paper\'s Figs. 2, 4, 5, 6 over '
              'epochs; 100 steps are about one epoch here).', '']
  lines += ['## Runs', '', '| run | status | box AP | mask AP | steps | '
            'training time, min | commit |', '| --- | --- | --- | --- | --- '
            '| --- | --- |']
  for r in sorted(records, key=lambda r: (r['variant'], r['seed'])):
    if r['status'] == 'ok':
      lines.append(
          f'| `{r["run"]}` | ok | {r["final"].get("AP", float("nan")):.3f} | '
          f'{r["final"].get("mask_AP", float("nan")):.3f} | {r["step"]} | '
          f'{r["training_seconds"] / 60:.1f} | {r.get("commit", "")} |')
    else:
      lines.append(f'| `{r["run"]}` | **failed** (exit {r["exit_code"]}) | '
                   f'- | - | - | - | {r.get("commit", "")} |')
  lines += ['', '## The variants', '']
  lines += [f'- `{s["variant"]}`: {s["description"]}'
            + (f' Paper: {s["paper_row"]}.' if s['paper_row'] else '')
            for s in summaries]
  return '\n'.join(lines) + '\n'


def plot(records: Sequence[Mapping[str, Any]],
         summaries: Sequence[Mapping[str, Any]], path: str) -> None:
  """Box and mask AP over training steps, one line per variant."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(1, 2, figsize=(12, 4.5))
  for s in summaries:
    curves: Dict[int, List[Mapping[str, float]]] = {}
    for r in records:
      if r['variant'] == s['variant'] and r['status'] == 'ok':
        for evaluation in r['evaluations']:
          curves.setdefault(evaluation['step'], []).append(evaluation)
    steps = sorted(curves)
    if not steps:
      continue
    for axis, metric in zip(axes, ('AP', 'mask_AP')):
      values = [[e[metric] for e in curves[step] if metric in e]
                for step in steps]
      line, = axis.plot(steps, [statistics.fmean(v) for v in values],
                        marker='o', label=s['variant'])
      axis.fill_between(steps, [min(v) for v in values],
                        [max(v) for v in values], alpha=0.15,
                        color=line.get_color())
  for axis, title in zip(axes, ('box AP', 'mask AP')):
    axis.set_xlabel('training step')
    axis.set_ylabel(title)
    axis.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=90)
  pyplot.close(figure)


def write(results_dir: str, variants: Sequence[variants_lib.Variant]) -> str:
  """Writes `<results_dir>/ablation.md`, `ablation/ablation.json` and the
  plot from the records there; returns the Markdown's path."""
  records = sweep.load_records(results_dir)
  parameters = {}
  for name in {r['variant'] for r in records}:
    if name in variants_lib.BY_NAME:
      parameters[name] = extractor_parameters(variants_lib.BY_NAME[name])
  summaries = summarize(records, variants, parameters)
  paired = against_baseline(records, variants)
  directory = os.path.join(results_dir, 'ablation')
  os.makedirs(directory, exist_ok=True)
  has_curves = any(r['status'] == 'ok' and r['evaluations'] for r in records)
  plot_path = os.path.join(directory, PLOT_NAME)
  if has_curves:
    plot(records, summaries, plot_path)
  elif os.path.exists(plot_path):  # drawn from records deleted since
    os.remove(plot_path)
  with open(os.path.join(directory, 'ablation.json'), 'w') as f:
    json.dump({'variants': summaries, 'against_baseline': paired}, f,
              indent=1)
  path = os.path.join(results_dir, 'ablation.md')
  with open(path, 'w') as f:
    f.write(markdown(summaries, records,
                     f'ablation/{PLOT_NAME}' if has_curves else None,
                     paired))
  return path
