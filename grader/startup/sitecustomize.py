"""Start-up hook for every Python program a lab test starts.

The kit's pytest plugin puts this folder first on PYTHONPATH, so Python
imports this module at start-up in the test's child programs (``python -c``,
``multiprocessing`` spawn children, a student's own scripts):

* with ``IPCLAB_DIAG_DIR`` set, the program dumps its stack into that folder
  when the grader asks for it (see grader/diagnostics.py), so a hung child can
  be shown to the student instead of only "timeout";
* with ``IPCLAB_PERTURB`` set to a seed, small random delays are inserted
  around fork, locks, semaphores and writes to shake out races
  (see ipclab_perturb.py).
It does nothing else and imports nothing heavy.
"""

import os

if os.environ.get("IPCLAB_DIAG_DIR"):
    import faulthandler
    import signal

    def _register_dump():
        folder = os.environ["IPCLAB_DIAG_DIR"]
        try:
            dump = open(os.path.join(folder, f"{os.getpid()}.stack"), "w")
        except OSError:
            return
        faulthandler.register(signal.SIGRTMIN + 5, file=dump, all_threads=True, chain=False)

    _register_dump()
    os.register_at_fork(after_in_child=_register_dump)

if os.environ.get("IPCLAB_PERTURB"):
    import ipclab_perturb

    ipclab_perturb.install(int(os.environ["IPCLAB_PERTURB"]))
