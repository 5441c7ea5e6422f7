"""`python -m interlink.migrations revision "what changes"`: a new, empty revision in `versions/`, numbered next."""

import re
import sys

from alembic import command

from interlink.migrations import config, head

if len(sys.argv) != 3 or sys.argv[1] != "revision":
    raise SystemExit(__doc__)
number = int(head().split("_")[0]) + 1
slug = re.sub(r"\W+", "_", sys.argv[2].lower()).strip("_")[:26]
command.revision(config(), sys.argv[2], rev_id=f"{number:04d}_{slug}")
