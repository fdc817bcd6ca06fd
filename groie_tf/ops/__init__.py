"""Functional ops, one module each: `roi_align` (RoIAlign and the choice of
its implementation), `fpn_levels` (FPN's level rule), `grid_points` (Grid
R-CNN's targets and decoding) and `native` (the C++ gradient kernel)."""
