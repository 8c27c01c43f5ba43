"""``python -m marginrobust.cli``: the command line, as ``marginrobust`` and ``python -m
marginrobust``."""

from .app import main

if __name__ == "__main__":
    main()
