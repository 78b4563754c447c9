"""StarGAN v2 command line: a thin dispatcher over the table of modes (core/cli/mode_table.py).

    python main.py --mode train --config configs/afhq.yaml
    python main.py --mode sample --config configs/celeba_hq.yaml --resume_iter 100000
"""
import importlib
import sys
from typing import Callable, List, Optional

from core.cli.arguments import parse_args
from core.cli.mode_table import MODES
from core.errors import UserError


def runner(mode: str) -> Callable:
    """The function that runs ``mode`` (imported now: each mode loads only what it needs)."""
    module, function = MODES[mode].runner.split(':')
    return getattr(importlib.import_module(module), function)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the mode of ``argv``; returns the exit status (2 on a user error, 128 + signal when
    training was stopped by one after saving)."""
    try:
        args = parse_args(argv)
        return runner(args.mode)(args) or 0
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
