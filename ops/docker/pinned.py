"""Print the project's pinned requirements (the base set plus the named extras), one a line.

The images install these in a layer of their own, before the source is copied, so that a change of code
rebuilds only the last, small layer.
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + [line for name in sys.argv[1:] for line in extras[name]]))
