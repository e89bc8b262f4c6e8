"""Dataset storage: the shard schema, the shard writer, reader primitives and checks, the
index and manifest, and the run files. Imported by both ``pipeline`` (which writes) and
``dataset`` (which reads); imports neither, nor JAX, PySCF or POSIX-only modules."""
