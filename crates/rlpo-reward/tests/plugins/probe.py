"""Test plugin with knobs, speaking protocol 2 (answers the handshake with `ready`):
--slow-start S   sleep S seconds before reading anything (start-up handshake timeouts);
--sleep S        sleep S seconds before each answer (a slow, sequential plugin);
--fork MARKER    start two forked children and an `sh -c` child that sleep forever (all with
                 MARKER in their command line) and report their pids on stderr as
                 "children: PID PID PID";
--env NAME       (repeatable) part `env_NAME` = 1 if NAME is in the environment, else 0.
Response "hang" never gets an answer. reward = metadata.k."""
import json
import os
import subprocess
import sys
import time


def arg(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


if arg("--slow-start"):
    time.sleep(float(arg("--slow-start")))
env_names = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--env"]
if arg("--fork"):
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            while True:
                time.sleep(1000)
        kids.append(pid)
    kids.append(subprocess.Popen(["sh", "-c", f"sleep 1000; : {arg('--fork')}"]).pid)
    sys.stderr.write("children: " + " ".join(map(str, kids)) + "\n")
    sys.stderr.flush()
for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        out = {"id": req["id"], "ready": True}
    else:
        if req["response"] == "hang":
            time.sleep(3600)
        time.sleep(float(arg("--sleep", 0)))
        k = float(req["metadata"]["k"])
        parts = {f"env_{n}": float(n in os.environ) for n in env_names}
        out = {"id": req["id"], "reward": k, "parts": parts}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
