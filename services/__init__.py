"""The services: each a package with ``__main__``, ``config``, pure ``handlers`` and boundaries."""
