"""Composition root: settings (the only place the environment is read), CLI, app assembly."""
