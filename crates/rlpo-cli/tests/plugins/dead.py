"""A plugin that cannot start: it reports an import failure on stderr and exits."""
import sys

sys.stderr.write("Traceback (most recent call last):\n  File \"dead.py\", line 1\nModuleNotFoundError: No module named 'verifier'\n")
sys.exit(1)
