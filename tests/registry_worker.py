"""One of two processes writing to the same registry at once (tests/test_registry.py::test_two_writers...).

    python registry_worker.py REGISTRY BUNDLE NAME N GO

Waits until the file GO exists (both workers start together), then adds the bundle N times and promotes each new
version at once; prints one JSON line per version: {"worker", "version"}. Exit status 0 if every call succeeded."""
import json
import sys
import time
from pathlib import Path

from trainkit.registry import Registry

root, bundle, name, n, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
reg = Registry(root)
while not go.exists():
    time.sleep(0.001)
for _ in range(n):
    v = reg.add(bundle)
    reg.promote(v)
    print(json.dumps({"worker": name, "version": v}), flush=True)
