"""``python -m felix_runtime_anyio [--backend trio]``: run a broker."""

from felix_runtime_anyio import main

raise SystemExit(main())
