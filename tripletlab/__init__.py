"""tripletlab: tripletlab."""
__version__ = "0.1.0"  # the package version (pyproject.toml reads it); `tripletlab --version` prints it


def main(argv: list[str] | None = None) -> int:
    """The `tripletlab` command (tripletlab.cli.main), imported only when called: Ctrl-C while
    its modules import ends the command in one line with exit status 130, as it does later."""
    try:
        from tripletlab.cli import main as cli_main
    except KeyboardInterrupt:
        import sys

        print("tripletlab: interrupted by SIGINT (while starting)", file=sys.stderr)
        return 130
    return cli_main(argv)
