"""What every demo stage gets: the output folder, the quick flag, the device, the seed, the events, and the
outputs and shared results the stages pass on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DemoContext"]


@dataclass
class DemoContext:
    out: Path
    quick: bool
    device: str
    seed: int
    events: object  # EventWriter
    outputs: dict = field(default_factory=dict)  # name -> path, shown at the end
    shared: dict = field(default_factory=dict)  # what a stage leaves for later ones (bundles, volumes)

    def say(self, message: str) -> None:
        print(f"  {message}", flush=True)
        self.events.emit("log", message=message)
