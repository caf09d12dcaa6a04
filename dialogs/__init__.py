"""Channel-neutral check-in conversation: scripts as data, a pure state machine, NLU, triage. No I/O.

Import from the submodules: ``dialogs.engine`` (DialogEngine, DialogState), ``dialogs.events``,
``dialogs.result``, ``dialogs.script`` (load_scripts), ``dialogs.triage``, ``dialogs.nlu``,
``dialogs.testing`` (run_script). Nothing is read from disk at import time.
"""
