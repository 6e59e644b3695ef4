"""``ssl3d demo``, the main job: phantoms, VoCo and VF pretraining, a fine-tuning study, click-to-segment,
pretext inspection and a report, one stage after another into ``demo_out/``.

The package's shape::

    context.py      DemoContext: what every stage gets (folder, quick flag, device, seed, events, shared results)
    runner.py       STAGES in order and run_demo (timings, demo.json, events)
    *_stage.py      one file per stage, each importing the features it shows (no feature imports the demo)
    commands.py     the ``ssl3d demo`` command

Example::

    summary = run_demo(Path("demo_out"), quick=True)     # {"stages": {name: seconds}, "outputs": {...}}
"""

from __future__ import annotations

from .context import DemoContext
from .runner import STAGES, Stage, run_demo

__all__ = ["DemoContext", "STAGES", "Stage", "run_demo"]
