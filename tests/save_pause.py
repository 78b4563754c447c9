"""``python tests/save_pause.py STEP POINT MARKER MAIN_ARGS...``: ``main.py`` whose checkpoint
save of STEP stops at POINT (see core.io.ckpt_files.save_checkpoint's hook: 'before_<kind>' or
'in_<kind>'), creates the file MARKER and waits there to be killed (tests/e2e/test_kill_during_save.py)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main  # noqa: E402
from core.train.loop import Trainer  # noqa: E402


def pause_at(at_step, at_point, marker):
    def hook(step, point):
        if step == at_step and point == at_point:
            open(marker, 'w').close()
            time.sleep(600)
            raise RuntimeError(f'nobody killed the save of {at_step} at {at_point}')
    return hook


if __name__ == '__main__':
    step, point, marker, *argv = sys.argv[1:]
    Trainer.save_hook = staticmethod(pause_at(int(step), point, marker))
    sys.exit(main.main(argv))
