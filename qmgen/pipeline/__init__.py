"""Dataset generation pipeline: shard files (``shards``), progress record (``manifest``).

Kept free of heavy imports; import the submodules you need.
"""
