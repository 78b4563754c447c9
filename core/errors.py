"""The one exception type for user mistakes: its message is one line naming the fix."""
import sys
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar('_T')


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
