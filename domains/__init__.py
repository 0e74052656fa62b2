"""Domain packages (installed as ``scalear.domains``): each specializes the core for one task.

A domain imports :mod:`scalear`; the core never imports a domain. Domains register their CLI verbs through
the ``scalear.domains`` entry-point group in ``pyproject.toml``.
"""

if __name__ != "scalear.domains":  # e.g. ``import domains`` from the repository root, which holds this folder
    raise ImportError(f"this is scalear.domains (the folder domains/ of the scalear repository), imported as "
                      f"{__name__!r}: import scalear.domains, or run from outside the repository root"
                      "")
