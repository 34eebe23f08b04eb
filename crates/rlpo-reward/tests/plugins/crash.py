"""Test plugin: like good.py, but exits with status 3 (without answering) on response "crash";
with --at-start it exits immediately, before reading anything."""
import json
import sys

if "--at-start" in sys.argv:
    sys.exit(3)
for line in sys.stdin:
    req = json.loads(line)
    if req["response"] == "crash":
        sys.stderr.write("crashing now\n")
        sys.exit(3)
    sys.stdout.write(json.dumps({"id": req["id"], "reward": float(req["metadata"]["k"])}) + "\n")
    sys.stdout.flush()
