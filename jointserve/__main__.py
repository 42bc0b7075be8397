"""`python -m jointserve` = the `jointserve` command."""

import sys

from jointserve.cli import main

sys.exit(main())
