"""runner: a Hydra-driven experiment runner for finding out what training techniques really do."""

__version__ = "0.1.0"
