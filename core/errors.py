"""The one exception type for user mistakes: its message is one line naming the fix."""
import sys
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar('_T')


def cut(text: str, limit: int = 60) -> str:
    """``text`` at most ``limit`` characters long, '...' marking a cut (for one-line messages)."""
    return text if len(text) <= limit else text[:limit - 3] + '...'


def shown(value: object, limit: int = 40) -> str:
    """How a one-line message shows a value it got: its repr, cut to ``limit``."""
    return cut(repr(value), limit)


class UserError(Exception):
    """Bad input (missing file, wrong folder layout, checkpoint of another configuration...).

    ``main.py`` prints ``error: <message>`` and exits with status 2, no traceback.
    """


def exit_on_user_error(main: Callable[[], _T]) -> _T:
    """Run a script's ``main()``; a UserError prints ``error: <message>`` and exits with 2."""
    try:
        return main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
