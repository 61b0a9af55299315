"""The exporter: a checkpoint (or random weights) -> an ovseg model directory (python -m ovseg_tools.export)."""
