"""The numerics report (`python -m tests.reference.error_report`, quoted in
docs/numerics.md) runs: it builds its inputs with the tests' helpers, so a
renamed helper would otherwise break it unnoticed."""

import sys

import pytest

from tests.reference import error_report


def test_every_row_of_the_report_is_computed_within_its_precision():
  rows = list(error_report.all_rows())
  # roi_align 4, attention 4, non-local 2, GRoIE 3, ContextBlock 2,
  # GridHead 2, grid points 2: the rows of docs/numerics.md's table.
  assert len(rows) == 19
  for name, dtype, error, scale in rows:
    assert scale > 0.5, f'{name}: the reference is (almost) all zeros'
    # GRoIE's float64 layer pools in float32 (RoIAlign always does).
    exact = dtype == 'float64' and not name.startswith('GRoIE')
    bound = 1e-12 if exact else 1e-5
    assert error <= bound * scale, (name, dtype, error, scale)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
