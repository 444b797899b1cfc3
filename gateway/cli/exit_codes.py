"""Exit codes more than one command uses (a command's own, like `audit`'s EXIT_PROBLEMS, stay with it)."""

EXIT_INVALID = 2  # bad input: config, arguments, a refused start
EXIT_INTERRUPTED = 130
