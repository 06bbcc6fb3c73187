"""``python -m webhook``: the same command as ``token-projector``."""

import sys

from webhook.cli import main

if __name__ == "__main__":
    sys.exit(main())
