"""The watcher: turns complete job files dropped in ``<NAS>/slurm-jobs/submit/`` into events.

Files directly in ``submit/`` and one folder deep (``submit/<anything>/<file>``, e.g. one folder
per user) are job files; hidden names, temporary names (``*.tmp``, ``*.part``, ``*.swp``,
``*~``) and the validator's ``.error``/``.receipt.json`` names are not. A file is published as
``file.detected`` once its size, mtime and inode stop changing, and only once per content.
"""
