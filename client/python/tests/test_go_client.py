"""A Go client (grpc-go, tests/testdata/goclient) calls the Python-protected service and decodes the
refusal with status.FromError(err).Details(): the google.rpc.Status and ErrorInfo the Python interceptor
writes are the googleapis ones, byte for byte where it matters."""

import json
import os
import shutil
import subprocess
import unittest

import support
from support import AUDIENCE, REPO, SERVERS, UsherProcess

GO_TIMEOUT = 600


class GoClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("go") is None:
            raise unittest.SkipTest("go is not installed: the Go client cannot be built")
        cls.goclient = os.path.join(support.tmp_dir(), "goclient")
        env = dict(os.environ, GOTOOLCHAIN="local")
        out = subprocess.run(["go", "build", "-o", cls.goclient, "./client/python/tests/testdata/goclient"], cwd=REPO,
                             capture_output=True, text=True, timeout=GO_TIMEOUT, env=env)
        if out.returncode != 0:
            raise AssertionError("go build of the Go client failed:\n" + out.stderr)
        cls.usher = UsherProcess.dev()

    @classmethod
    def tearDownClass(cls):
        cls.usher.stop()

    def go(self, port, *args):
        out = subprocess.run([self.goclient, "-addr", "127.0.0.1:%d" % port] + list(args), capture_output=True,
                             text=True, timeout=support.CMD_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def check(self, flavor):
        server = SERVERS[flavor](self.usher.addr, required_scopes={support.SAY: ["echo.read"]})
        self.addCleanup(server.stop)
        users = "Bearer " + self.usher.mint("api/users", "echo.read")
        for stream, method in ((False, support.SAY), (True, support.COUNT)):
            with self.subTest(flavor=flavor, stream=stream):
                got = self.go(server.port, "-authorization", users, "-method", method, *(["-stream"] if stream else []))
                self.assertEqual(got["code"], "Unauthenticated")
                self.assertTrue(got["message"].startswith("AUDIENCE_MISMATCH: "), got["message"])
                self.assertEqual(len(got["details"]), 1, got["details"])
                d = got["details"][0]
                self.assertEqual((d.get("type"), d["reason"], d["domain"]), ("google.rpc.ErrorInfo", "AUDIENCE_MISMATCH",
                                                                            "usher.v1"))
                self.assertEqual((d["metadata"]["expected_audience"], d["metadata"]["actual_audience"]),
                                 (AUDIENCE, "api/users"))
                self.assertEqual(len(got["www_authenticate"]), 1)
                self.assertTrue(got["www_authenticate"][0].startswith(
                    'Bearer realm="api/invoices", error="invalid_token", error_description="AUDIENCE_MISMATCH: '))
        got = self.go(server.port, "-authorization", "Bearer " + self.usher.mint(AUDIENCE, "echo.read"))
        self.assertEqual((got["code"], got["details"]), ("OK", []))
        got = self.go(server.port, "-authorization", "Bearer " + self.usher.mint(AUDIENCE))
        self.assertEqual(got["code"], "PermissionDenied")
        self.assertEqual(got["details"][0]["metadata"]["missing_scopes"], "echo.read")
        got = self.go(server.port)
        self.assertEqual((got["code"], got["details"][0]["reason"]), ("Unauthenticated", "MISSING_CREDENTIALS"))
        self.assertEqual(got["www_authenticate"], ['Bearer realm="api/invoices"'])

    def test_go_decodes_the_sync_interceptors_details(self):
        self.check("sync")

    def test_go_decodes_the_aio_interceptors_details(self):
        self.check("aio")


if __name__ == "__main__":
    unittest.main()
