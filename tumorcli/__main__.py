"""`python -m tumorcli ...` (and `torchrun -m tumorcli train ...`) is the `tumor` command."""

from tumorcli.cli.app import main

main()
