"""Reading qmgen datasets: ``open_dataset(DIR)`` -> :class:`Dataset` (NumPy, JAX, PyTorch)."""

from qmgen.dataset.columns import Columns, to_packed, to_padded
from qmgen.dataset.reader import Dataset, open_dataset
from qmgen.storage.schema import CorruptShardError

__all__ = ["Columns", "CorruptShardError", "Dataset", "open_dataset", "to_packed", "to_padded"]
