"""Console entry points that are thin shells over the package (``prefixlab-score``)."""
