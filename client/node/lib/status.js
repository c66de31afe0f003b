'use strict';
// google.rpc.Status with one google.rpc.ErrorInfo, as the grpc-status-details-bin
// trailer carries it: encoded with protobufjs from ../proto/google/rpc (the
// googleapis messages' package, names and field numbers), so that grpc-go's
// status.FromError(err).Details(), grpc-java's StatusProto.fromThrowable and
// grpcio-status read it.

const path = require('node:path');
const protobuf = require('protobufjs');

const PROTO_DIR = path.join(__dirname, '..', 'proto');
const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';
const DETAILS_KEY = 'grpc-status-details-bin';

let types;
function load() {
  if (!types) {
    const root = new protobuf.Root();
    // Imports resolve under ../proto; google/protobuf/any.proto is protobufjs' own.
    root.resolvePath = (origin, target) => (target.startsWith('google/protobuf/') ? target : path.join(PROTO_DIR, target));
    root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
    root.resolveAll();
    types = { Status: root.lookupType('google.rpc.Status'), ErrorInfo: root.lookupType('google.rpc.ErrorInfo') };
  }
  return types;
}

/** Serialized google.rpc.Status{code, message, details: [Any(ErrorInfo{reason, domain, metadata})]}. */
function encodeStatusDetails(code, message, errorInfo) {
  const { Status, ErrorInfo } = load();
  const info = ErrorInfo.encode(ErrorInfo.fromObject({
    reason: errorInfo.reason,
    domain: errorInfo.domain,
    metadata: { ...(errorInfo.metadata || {}) },
  })).finish();
  return Buffer.from(Status.encode(Status.fromObject({
    code,
    message,
    details: [{ type_url: ERROR_INFO_TYPE_URL, value: info }],
  })).finish());
}

/**
 * Decodes a grpc-status-details-bin value (a Buffer, a grpc.Metadata, or an
 * error from a grpc-js call): { code, message, errorInfo: {reason, domain,
 * metadata} | null, details: [{typeUrl, value}] }, or null when there is none.
 */
function decodeStatusDetails(source) {
  let buf = source;
  if (source && typeof source.get === 'function') buf = source.get(DETAILS_KEY)[0];
  else if (source && source.metadata && typeof source.metadata.get === 'function') buf = source.metadata.get(DETAILS_KEY)[0];
  if (!Buffer.isBuffer(buf) && !(buf instanceof Uint8Array)) return null;
  const { Status, ErrorInfo } = load();
  const st = Status.toObject(Status.decode(buf), { defaults: true, arrays: true, objects: true });
  const details = st.details.map((d) => ({ typeUrl: d.type_url, value: Buffer.from(d.value) }));
  const info = details.find((d) => d.typeUrl === ERROR_INFO_TYPE_URL);
  let errorInfo = null;
  if (info) {
    const e = ErrorInfo.toObject(ErrorInfo.decode(info.value), { defaults: true, objects: true });
    errorInfo = { reason: e.reason, domain: e.domain, metadata: { ...e.metadata } };
  }
  return { code: st.code, message: st.message, errorInfo, details };
}

module.exports = { encodeStatusDetails, decodeStatusDetails, ERROR_INFO_TYPE_URL, DETAILS_KEY };
