"""``python -m src.registry list|decide|promote|rollback``: the registry command (src.lifecycle.commands)."""

import sys

from src.lifecycle.commands import main

if __name__ == "__main__":
    sys.exit(main())
