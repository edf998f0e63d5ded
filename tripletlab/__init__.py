"""tripletlab: tripletlab."""
__version__ = "0.1.0"  # the package version (pyproject.toml reads it); `tripletlab --version` prints it

from tripletlab.cli import main  # noqa: E402
