"""Start-up hook for every Python program a lab test starts.

The kit's pytest plugin puts this folder first on PYTHONPATH, so Python
imports this module at start-up in the test's child programs (``python -c``,
``multiprocessing`` spawn children, a student's own scripts):

* with ``IPCLAB_DIAG_DIR`` set, the program dumps its stack into that folder
  when the grader asks for it (ipclab_dump.py), so a hung child can be shown
  to the student instead of only "timeout";
* with ``IPCLAB_PERTURB`` set to a seed, small random delays are inserted
  around fork, locks, semaphores and writes to shake out races
  (ipclab_perturb.py).
It does nothing else.
"""

import os

if os.environ.get("IPCLAB_DIAG_DIR"):
    import atexit
    import sys

    import ipclab_dump

    ipclab_dump.install(os.environ["IPCLAB_DIAG_DIR"])

    def _stop_resource_tracker():
        # multiprocessing's resource tracker outlives the program that started
        # it by a moment, and would then exit as an orphan of the test process
        # and be blamed as a zombie. Stopping (and reaping) it here avoids that.
        tracker = sys.modules.get("multiprocessing.resource_tracker")
        try:
            tracker._resource_tracker._stop()
        except Exception:
            pass

    atexit.register(_stop_resource_tracker)

if os.environ.get("IPCLAB_PERTURB"):
    import ipclab_perturb

    ipclab_perturb.install(int(os.environ["IPCLAB_PERTURB"]))
