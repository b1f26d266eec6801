"""`python -m pipeline.cli ...` runs the `outbox` command (the tests and benches spawn it so)."""

from pipeline.cli import main

raise SystemExit(main())
