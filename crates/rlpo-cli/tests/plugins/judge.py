"""Reward plugin for the binary's fault tests (protocol 2). reward = 1 if the response contains a
digit, else -1 (deterministic, like the tiny recipe's format reward). Options:
--sleep S         sleep S seconds before each answer (a slow plugin);
--marker M        ignored; puts M in the command line so tests can count the plugin's processes;
--fork            fork two children and start an `sh -c` grandchild (all carrying the marker),
                  which sleep forever;
--hang-once DIR   the first instance to see a scoring request creates DIR/hung and never answers
                  that request; later instances answer normally;
--die             pass the handshake, then fail every scoring request with a traceback (exit);
--fail-every N    answer `error` to every N-th scoring request (counted from 1 per instance);
--error-all       answer `error` to every scoring request.
"""
import json
import os
import subprocess
import sys
import time


def arg(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


if "--fork" in sys.argv:
    marker = arg("--marker", "")
    for _ in range(2):
        if os.fork() == 0:
            while True:
                time.sleep(1000)
    subprocess.Popen(["sh", "-c", f"sleep 1000; : {marker}"])
seen = 0
for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        out = {"id": req["id"], "ready": True}
    else:
        seen += 1
        if "--die" in sys.argv:
            raise RuntimeError("the scoring backend is unreachable")
        hang_dir = arg("--hang-once")
        if hang_dir and not os.path.exists(os.path.join(hang_dir, "hung")):
            open(os.path.join(hang_dir, "hung"), "w").close()
            time.sleep(3600)
        time.sleep(float(arg("--sleep", 0)))
        every = int(arg("--fail-every", 0))
        if "--error-all" in sys.argv or (every and seen % every == 0):
            out = {"id": req["id"], "error": "cannot judge this one"}
        else:
            ok = any(c.isdigit() for c in req["response"])
            out = {"id": req["id"], "reward": 1.0 if ok else -1.0}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
