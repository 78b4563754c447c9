"""Image data: domain folders, the data order and each process's share, loaders, the demo dataset."""
