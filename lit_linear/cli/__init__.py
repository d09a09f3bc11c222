"""The command line: LightningCLI wired for sweeps (``python train.py`` / ``lit-linear``) and its console."""

from lit_linear.cli.linear_cli import main

__all__ = ["main"]
