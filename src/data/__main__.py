"""``python -m src.data fetch``: download the real data now (src.data.fetch)."""

import sys

from src.data.fetch import main

if __name__ == "__main__":
    sys.exit(main())
