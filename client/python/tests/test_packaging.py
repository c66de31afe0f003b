"""The package installs with pip from its directory (pyproject.toml, setuptools) and works from there, and
it works with the protobuf runtime's pure-Python implementation as well as with Debian's C++ one."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

import support
from support import HERE, PKG

PIP_TIMEOUT = 300

SMOKE = textwrap.dedent("""
    import json, sys
    import usher_grpc
    from usher_grpc import _proto
    auth = usher_grpc.Authenticator("api/invoices")
    r = auth.challenge(False, __import__("grpc").StatusCode.UNAUTHENTICATED, "invalid_token", "EXPIRED: x",
                       "EXPIRED", {"expected_audience": "api/invoices"})
    st = _proto.Status.FromString(dict(r.trailers)["grpc-status-details-bin"])
    info = _proto.ErrorInfo.FromString(st.details[0].value)
    i = usher_grpc.UsherServerInterceptor("127.0.0.1:1", "api/invoices")
    i.close()
    print(json.dumps({"file": usher_grpc.__file__, "code": st.code, "reason": info.reason,
                      "metadata": dict(info.metadata), "www": dict(r.trailers)["www-authenticate"]}))
""")


class PackagingTest(unittest.TestCase):
    def test_pip_install_from_the_directory(self):
        try:
            import pip  # noqa: F401
        except ImportError:
            self.skipTest("pip is not installed for %s (Debian: python3-pip)" % sys.executable)
        tmp = tempfile.mkdtemp(dir=support.tmp_dir())
        # Built from a copy: an in-tree build leaves build/ and *.egg-info behind.
        src = os.path.join(tmp, "src")
        shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
        target = os.path.join(tmp, "site")
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                              "--disable-pip-version-check", "--target", target, src],
                             capture_output=True, text=True, timeout=PIP_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        env = dict(os.environ, PYTHONPATH=target)
        out = subprocess.run([sys.executable, "-c", SMOKE], capture_output=True, text=True, timeout=60, cwd=tmp, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout)
        self.assertTrue(got["file"].startswith(target), got["file"])
        self.assertEqual((got["code"], got["reason"], got["metadata"]), (16, "EXPIRED", {"expected_audience": "api/invoices"}))
        self.assertEqual(got["www"], 'Bearer realm="api/invoices", error="invalid_token", error_description="EXPIRED: x"')
        dist = [d for d in os.listdir(target) if d.endswith(".dist-info")]
        self.assertEqual(dist, ["usher_grpc-0.1.0.dist-info"])
        with open(os.path.join(target, dist[0], "METADATA")) as f:
            meta = f.read()
        self.assertRegex(meta, r"Requires-Dist: grpcio ?\(?>=1\.51")
        self.assertRegex(meta, r"Requires-Dist: protobuf ?\(?>=3\.20")

    def test_pure_python_protobuf_runtime(self):
        """The fake-usher table test, every row, with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python."""
        env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", PYTHONPATH=PKG)
        out = subprocess.run([sys.executable, "-c", "from google.protobuf.internal import api_implementation as a; "
                              "print(a.Type())"], capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(out.stdout.strip(), "python", out.stderr)
        out = subprocess.run([sys.executable, "-m", "unittest", "test_rules.SyncRulesTest.test_every_row_of_the_reason_table",
                              "test_generated"], capture_output=True, text=True, timeout=300, cwd=HERE, env=env)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn("OK", out.stderr)


if __name__ == "__main__":
    unittest.main()
