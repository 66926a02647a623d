"""`python -m waypost` runs the `waypost` command line."""

from waypost.cli import main

if __name__ == "__main__":
    main()
