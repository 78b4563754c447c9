"""The one exception type for user mistakes: its message is one line naming the fix."""


class UserError(Exception):
    """Bad input (missing file, wrong folder layout, checkpoint of another configuration...).

    ``main.py`` prints ``error: <message>`` and exits with status 2, no traceback.
    """
