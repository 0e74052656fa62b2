"""Data loaders, file formats, procedural generators and split lists (installed as ``scalear.datasets``)."""

if __name__ != "scalear.datasets":  # e.g. ``import datasets`` from the repository root, which holds this folder
    raise ImportError(f"this is scalear.datasets (the folder datasets/ of the scalear repository), imported as "
                      f"{__name__!r}: import scalear.datasets, or run from outside the repository root"
                      " (a bare 'import datasets' here would shadow Hugging Face datasets)")
