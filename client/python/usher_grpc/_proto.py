"""usher.v1 and google.rpc message classes, built at import time from _descriptors.

The descriptors live in a private DescriptorPool, so they never clash with another copy of usher.proto
or of googleapis' google/rpc protos (grpcio-status, googleapis-common-protos) in the same process. The
message classes come from the protobuf runtime itself (any implementation: upb, cpp or python), which is
why no generated _pb2 module, and no protoc, is needed at run time.
"""

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf import struct_pb2, timestamp_pb2

from . import _descriptors

POOL = descriptor_pool.DescriptorPool()
for _wkt in (any_pb2, duration_pb2, struct_pb2, timestamp_pb2):
    POOL.AddSerializedFile(_wkt.DESCRIPTOR.serialized_pb)
for _file in descriptor_pb2.FileDescriptorSet.FromString(_descriptors.FILE_DESCRIPTOR_SET).file:
    POOL.AddSerializedFile(_file.SerializeToString())


def message_class(full_name):
    """The message class of full_name ("usher.v1.Claims") in the private pool."""
    desc = POOL.FindMessageTypeByName(full_name)
    get = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get is not None:
        return get(desc)
    return message_factory.MessageFactory(POOL).GetPrototype(desc)


ValidateTokenRequest = message_class("usher.v1.ValidateTokenRequest")
ValidateTokenResponse = message_class("usher.v1.ValidateTokenResponse")
Claims = message_class("usher.v1.Claims")
Status = message_class("google.rpc.Status")
ErrorInfo = message_class("google.rpc.ErrorInfo")
Any = message_class("google.protobuf.Any")

REASON = POOL.FindEnumTypeByName("usher.v1.Reason")
REASON_VALID = REASON.values_by_name["REASON_VALID"].number

VALIDATE_TOKEN = "/usher.v1.TokenService/ValidateToken"
ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo"


def reason_name(number):
    """The Reason's full name ("REASON_EXPIRED"), or "REASON_<n>" for a number this usher.proto lacks."""
    value = REASON.values_by_number.get(number)
    return value.name if value is not None else "REASON_%d" % number
