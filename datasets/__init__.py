"""Data loaders, file formats, procedural generators and split lists (installed as ``scalear.datasets``)."""
