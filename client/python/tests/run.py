"""Runs every test of usher_grpc and ends with one line: `python interceptor: N passed, M failed`.

    cd client/python/tests && USHER_BIN=/path/to/usher /usr/bin/python3 run.py [--results FILE]

N counts the tests that passed, M those that failed or errored (a test whose subtests failed counts once,
a class whose setUpClass failed counts once); skipped tests are in neither and are listed before the line.
With --results FILE the counts are also written there as JSON, for .ci/polyglot-python. Exit status 0 only
when M is 0 and at least one test ran.
"""

import json
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    results = None
    if "--results" in argv:
        results = argv[argv.index("--results") + 1]
    sys.path.insert(0, HERE)
    start = time.monotonic()
    suite = unittest.TestLoader().discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, buffer=False).run(suite)

    def test_id(t):
        return getattr(t, "test_case", t).id()  # a failed subtest counts for its test

    failed_ids = {test_id(t) for t, _ in result.failures + result.errors} | {t.id() for t in result.unexpectedSuccesses}
    ran_failed = {i for i in failed_ids if not i.startswith(("setUpClass", "tearDownClass", "setUpModule",
                                                             "tearDownModule"))}
    # Class- and module-level errors (_ErrorHolder) are failures of tests that did not run.
    failed = len(failed_ids)
    passed = result.testsRun - len(ran_failed) - len(result.skipped) - len(result.expectedFailures)
    for t, why in result.skipped:
        print("skipped: %s (%s)" % (t.id(), why))
    print("time: %.1fs" % (time.monotonic() - start))
    if results:
        with open(results, "w") as f:
            json.dump({"passed": passed, "failed": failed, "skipped": len(result.skipped)}, f)
    print("python interceptor: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
