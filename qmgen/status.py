"""Status codes of a computed conformer or a failed input line (stored as uint8).

Every input line ends as stored labels (``OK``, or ``NOT_CONVERGED`` with labels kept and
flagged) or as a failure record with one of the other codes and a human-readable message.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    OK = 0
    NOT_CONVERGED = 1  # SCF hit max_cycle; labels stored, converged=False
    INVALID_INPUT = 2  # unparsable line, bad SMILES, binary junk, empty molecule
    UNSUPPORTED_ELEMENT = 3  # element outside the allowed set or missing from the basis
    ODD_ELECTRONS = 4  # radical / open shell: closed-shell methods only
    EMBED_FAILED = 5  # RDKit could not make a conformer
    TOO_LARGE = 6  # more atoms or basis functions than the run allows
    NON_FINITE = 7  # NaN or inf in a result
    COMPUTE_ERROR = 8  # an exception inside the compute step (message says which)
    WORKER_DIED = 9  # the process computing it died repeatedly

    @property
    def label(self) -> str:
        return self.name.lower()


FAILURE_STATUSES = tuple(s for s in Status if s not in (Status.OK, Status.NOT_CONVERGED))
