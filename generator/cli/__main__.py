"""`python -m generator.cli`: the same as `lfk`."""

from . import main

main()
