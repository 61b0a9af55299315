"""The default model's training recipe (docs/recipe.md; python -m ovseg_tools.recipe)."""
