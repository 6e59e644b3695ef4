"""Data: what goes into a network and the way back to the user's grid.

    preprocess.py   Volume -> network tensor (N, C, D, H, W) and the exact mapping back (GridMapping)
    datasets.py     which image goes with which label (folders, nnU-Net layouts, datalists); the volume cache
    cache_build.py  the cache built at scale: worker processes, a shard per rank, agreement by polling
    mapped.py       the cache read through memory maps, a sample's region at a time (MappedVolume)
    phantoms.py     CT-like phantoms with organs in consistent places (tests, demo, benchmarks)
    samples.py      the real CT samples (pyradiomics lung1/lung2), fetched once and checked
    commands.py     ``ssl3d cache``
"""
