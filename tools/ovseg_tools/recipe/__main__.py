"""python -m ovseg_tools.recipe: the whole recipe, stage by stage (stages.py)."""
from ..cli import run
from .stages import main

run(main)
