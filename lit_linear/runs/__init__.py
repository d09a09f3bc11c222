"""A run's files and how a run ends: atomic writes, atomic checkpoints, finding a run's checkpoint again
(``--ckpt_path best|last``), and the one line and exit status of a fault."""
