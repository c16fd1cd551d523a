"""``python -m felix_runtime_asyncio``: run a broker."""

from felix_runtime_asyncio import main

raise SystemExit(main())
