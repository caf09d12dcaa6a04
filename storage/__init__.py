"""Persistence: SQLAlchemy 2.x models, repositories, migrations. Imports nothing of ours.

Kept import-light on purpose: ``dialogs`` imports ``storage.enums`` and must not pull in a
database driver by doing so.
"""
