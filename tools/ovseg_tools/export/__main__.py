"""python -m ovseg_tools.export: the exporter's command line (model_dir.py)."""
from ..cli import run
from .model_dir import main

run(main)
