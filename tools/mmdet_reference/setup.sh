#!/bin/sh
# Creates the mmdetection 3.3.0 reference environment (CPU). Usage: sh tools/mmdet_reference/setup.sh [VENV_DIR]   (default .mmdet-venv)
python3.11 -m venv "${1:-.mmdet-venv}" && "${1:-.mmdet-venv}"/bin/pip install -r tools/mmdet_reference/requirements.txt && "${1:-.mmdet-venv}"/bin/pip install --no-deps mmdet==3.3.0
