"""Test plugin: like good.py, but never answers (sleeps) on response "hang"."""
import json
import sys
import time

for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        sys.stdout.write(json.dumps({"id": req["id"], "ready": True}) + "\n")
        sys.stdout.flush()
        continue
    if req["response"] == "hang":
        time.sleep(3600)
    sys.stdout.write(json.dumps({"id": req["id"], "reward": float(req["metadata"]["k"])}) + "\n")
    sys.stdout.flush()
