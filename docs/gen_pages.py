"""Pages the docs build writes from the code (mkdocs-gen-files runs this): the keys reference,
from the settings dataclasses, so it lists exactly the keys the command line takes."""

import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's `r21d_features -> .` link, when not installed

from r21d_features.configs.schema import keys_markdown  # noqa: E402

with mkdocs_gen_files.open("reference/keys.md", "w") as page:
    page.write(keys_markdown("r21d"))
