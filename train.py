"""Train, sweep, test and predict linear classifiers: ``python train.py fit --config configs/softmax_sweep.yaml``.

See ``python train.py --help`` and ``python train.py fit --help``; all the logic is in :mod:`lit_linear.cli.linear_cli`.
"""

from lit_linear.cli.linear_cli import main

if __name__ == "__main__":
    main()
