"""Exit codes shared by every command: 0 fine, 1 the answer is "no" (denied, refused), 2 unusable input."""

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
