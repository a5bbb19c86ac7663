"""The NAS door's validator: checks a dropped job file, submits it as its owner, or files it.

``handlers`` decides (pure, dependencies injected), ``submitting`` is the Slurm boundary,
``filing`` owns the moves, receipts, error files and the submission journal on the NAS.
"""
