"""Test plugin: like good.py, but exits with status 3 (without answering) on response "crash";
with --at-start it exits immediately, before reading anything (it never completes the start-up
handshake); with --die-on-request it completes the handshake, then writes a traceback to stderr and
exits on its first scoring request; with --exit-after N it exits (status 0) right after its N-th
answer."""
import json
import sys

if "--at-start" in sys.argv:
    sys.stderr.write("fatal: cannot load the checker\n")
    sys.exit(3)
exit_after = int(sys.argv[sys.argv.index("--exit-after") + 1]) if "--exit-after" in sys.argv else None
answered = 0
for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        sys.stderr.write("crash.py up\n")
        sys.stderr.flush()
        sys.stdout.write(json.dumps({"id": req["id"], "ready": True}) + "\n")
        sys.stdout.flush()
        continue
    if "--die-on-request" in sys.argv:
        raise RuntimeError("scoring backend is gone")
    if req["response"] == "crash":
        sys.stderr.write("crashing now\n")
        sys.exit(3)
    sys.stdout.write(json.dumps({"id": req["id"], "reward": float(req["metadata"]["k"])}) + "\n")
    sys.stdout.flush()
    answered += 1
    if answered == exit_after:
        sys.exit(0)
