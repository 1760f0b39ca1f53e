"""`python -m composer` runs the command line (a supervisor, started so, skips the parser)."""

import sys

if "__supervise" in sys.argv[1:]:
    from composer.app.lifecycle import supervise_command

    sys.exit(supervise_command(sys.argv[1:]))

from composer.cli import run

run()
