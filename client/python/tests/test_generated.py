"""The generated modules are current, and the reason table is examples/reasons.json's (internal/reasons):
these tests fail when either source changes without `tools/generate.py` being run."""

import json
import os
import sys
import unittest

import support  # noqa: F401  (puts the package on sys.path)
from support import PKG, REPO

sys.path.insert(0, os.path.join(PKG, "tools"))
import generate  # noqa: E402

from usher_grpc import _descriptors, _proto, _reasons  # noqa: E402


class GeneratedTest(unittest.TestCase):
    def test_reason_table_is_reasons_json(self):
        with open(os.path.join(REPO, "examples", "reasons.json")) as f:
            t = json.load(f)
        with open(generate.REASONS_PY) as f:
            self.assertEqual(f.read(), generate.render_reasons(t), "stale _reasons.py: run tools/generate.py")
        want = {r["reason"]: (r["grpc_code"], r["http_status"], r["bearer_error"], r["cacheable"], r["retryable"],
                              r["challenge"]) for r in t["reasons"]}
        self.assertEqual({k: tuple(v) for k, v in _reasons.RULES.items()}, want)
        u = t["unknown"]
        self.assertEqual(tuple(_reasons.UNKNOWN), (u["grpc_code"], u["http_status"], u["bearer_error"], u["cacheable"],
                                                   u["retryable"], u["challenge"]))
        self.assertEqual(_reasons.DPOP_ALGS, t["dpop_algs"])

    def test_every_reason_of_usher_proto_is_in_the_table(self):
        names = [v.name for v in _proto.REASON.values]
        self.assertEqual(sorted(n for n in names if n != "REASON_UNSPECIFIED"), sorted(_reasons.RULES))
        for code in {r.grpc_code for r in _reasons.RULES.values()} | {_reasons.UNKNOWN.grpc_code}:
            self.assertTrue(hasattr(__import__("grpc").StatusCode, code), code)

    def test_descriptors_are_compiled_from_the_protos_now(self):
        with open(generate.DESCRIPTORS_PY) as f:
            current = f.read()
        self.assertEqual(current, generate.render_descriptors(generate.descriptor_set()),
                         "stale _descriptors.py: proto/usher/v1/usher.proto or client/python/proto changed; "
                         "run /usr/bin/python3 client/python/tools/generate.py")
        self.assertEqual(_descriptors.FILES, generate.PROTO_FILES)

    def test_google_rpc_messages_have_googleapis_numbers(self):
        st = _proto.Status.DESCRIPTOR
        self.assertEqual(st.full_name, "google.rpc.Status")
        self.assertEqual({f.name: (f.number, f.type, f.label) for f in st.fields}, {
            "code": (1, 5, 1), "message": (2, 9, 1), "details": (3, 11, 3)})  # int32, string, repeated message
        self.assertEqual(st.fields_by_name["details"].message_type.full_name, "google.protobuf.Any")
        info = _proto.ErrorInfo.DESCRIPTOR
        self.assertEqual(info.full_name, "google.rpc.ErrorInfo")
        self.assertEqual({f.name: f.number for f in info.fields}, {"reason": 1, "domain": 2, "metadata": 3})
        entry = info.fields_by_name["metadata"].message_type
        self.assertTrue(entry.GetOptions().map_entry)
        self.assertEqual([(f.name, f.type) for f in entry.fields], [("key", 9), ("value", 9)])

    def test_validate_token_method(self):
        svc = _proto.POOL.FindServiceByName("usher.v1.TokenService")
        m = svc.methods_by_name["ValidateToken"]
        self.assertEqual("/%s/%s" % (svc.full_name, m.name), _proto.VALIDATE_TOKEN)
        self.assertEqual((m.input_type.full_name, m.output_type.full_name),
                         ("usher.v1.ValidateTokenRequest", "usher.v1.ValidateTokenResponse"))


if __name__ == "__main__":
    unittest.main()
