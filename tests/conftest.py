"""Suite-wide settings: one torch thread per test process (pytest-xdist runs two on this 2-core machine,
and oversubscribed threads make CPU tests many times slower)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402

torch.set_num_threads(1)
