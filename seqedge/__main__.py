"""`python -m seqedge` is the `seqedge` command."""

from seqedge.cli.app import main

main()
