"""`python -m havana` runs the command-line interface."""

from havana.cli import main

raise SystemExit(main())
