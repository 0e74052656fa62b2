"""Domain packages (installed as ``scalear.domains``): each specializes the core for one task.

A domain imports :mod:`scalear`; the core never imports a domain. Domains register their CLI verbs through
the ``scalear.domains`` entry-point group in ``pyproject.toml``.
"""
