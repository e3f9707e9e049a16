"""The Python tests' harness: check() counts and reports a failure with its
detail and carries on; summary() prints "name: N passed, N failed" and gives
the exit status."""
import sys

passed = failed = 0


def check(cond, what, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAILED: {what}\n  {detail}", file=sys.stderr)


def summary(name):
    print(f"{name}: {passed} passed, {failed} failed")
    return 1 if failed else 0
