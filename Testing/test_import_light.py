"""``import ssl3d`` stays light (DESIGN.md): Slicer's dependency check and GPU machines without the heavy
libraries must be able to import the package, its error types, the requirements check and the CLI."""

import json
import subprocess
import sys

HEAVY = ("torch", "monai", "SimpleITK", "nibabel")

_PROBE = f"""
import contextlib, io, json, sys
heavy = {HEAVY!r}
import ssl3d, ssl3d.cli, ssl3d.errors, ssl3d.requirements, ssl3d.io
after_import = [m for m in heavy if m in sys.modules]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        ssl3d.cli.main(["--help"])  # builds the parser: every feature module registers its subcommands
    except SystemExit:
        pass
after_help = [m for m in heavy if m in sys.modules]
print(json.dumps({{"import": after_import, "help": after_help}}))
"""


def test_import_and_cli_help_do_not_load_heavy_libraries():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "help": []}
