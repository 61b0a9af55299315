"""How the `python -m ovseg_tools...` entry points end: library code raises ValueError (bad input),
RuntimeError (a missing package, a result that cannot be made) or OSError (a file); the entry point
prints one line (the message, and where in ovseg_tools it was raised) and exits 1. argparse's usage
errors exit 2 as usual; any other exception is a bug and keeps its traceback."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable


def run(main: Callable[[], object]) -> None:
    try:
        main()
    except (ValueError, RuntimeError, OSError) as exc:
        package = Path(__file__).resolve().parent
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if package in Path(f.filename).resolve().parents]
        where = f" ({Path(ours[-1].filename).resolve().relative_to(package.parent)}:{ours[-1].lineno})" if ours else ""
        print(f"error: {exc}{where}", file=sys.stderr)
        sys.exit(1)
