"""HDF5 readers and writers, training data sets (DESIGN.md §4)."""
