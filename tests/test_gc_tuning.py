"""The process tunes the cycle collector once the service has started (`exporter.gc_tuning`).

Run in a child interpreter: freezing the test process's own objects would change every
test after this one.
"""

from __future__ import annotations

import subprocess
import sys

from exporter import gc_tuning

CHILD = """
import gc
from exporter.cli import serve

class Service:
    started = False
    def start(self):
        self.started = True
        print(gc.get_threshold(), gc.get_freeze_count())
    def stop(self):
        pass

serve(Service(), 0.05)
print(gc.get_threshold(), gc.get_freeze_count() > 0)
"""


def test_serve_sets_the_thresholds_and_freezes_after_the_service_started() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out[0] != f"{gc_tuning.THRESHOLDS} 0" and out[0].endswith(" 0")  # untouched
    assert out[1] == f"{gc_tuning.THRESHOLDS} True"
