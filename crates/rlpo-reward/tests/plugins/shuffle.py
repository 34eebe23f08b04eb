"""Test plugin: collects every request that is available (waiting up to 30 ms for more), then
answers them in reverse order, so answers arrive out of order."""
import json
import os
import select
import sys

buf = b""
pending = []
while True:
    ready, _, _ = select.select([0], [], [], 0.03)
    if ready:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for req in (json.loads(l) for l in lines if l.strip()):
            if req.get("handshake"):
                # Declares 8 workers: it answers in batches of up to 8 at once.
                sys.stdout.write(json.dumps({"id": req["id"], "ready": True, "workers": 8}) + "\n")
                sys.stdout.flush()
            else:
                pending.append(req)
        if len(pending) < 8:
            continue
    for req in reversed(pending):
        sys.stdout.write(json.dumps({"id": req["id"], "reward": float(req["metadata"]["k"])}) + "\n")
    sys.stdout.flush()
    pending = []
