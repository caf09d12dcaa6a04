"""Channel-neutral check-in conversation: scripts as data, a pure state machine, NLU, triage. No I/O."""
