"""HDF5 readers and writers, training data sets, movie archives (DESIGN.md §4)."""
