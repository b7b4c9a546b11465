"""Test-session setup shared by the unit tests and the nbval notebook runs.

Under pytest-xdist each worker (and every notebook kernel it starts, which inherits
this environment) gets its share of the cores: two workers each using every core
would make the threads fight and run several times slower on a small machine.
"""

import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _workers > 1:
    _share = str(max(1, (os.cpu_count() or 1) // _workers))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _share)
    import torch

    torch.set_num_threads(int(_share))

# Notebooks and tests draw figures without a screen.
os.environ.setdefault("MPLBACKEND", "Agg")
