// The Sync call's write path: how a SyncResponse becomes bytes for grpc-js. Messages the
// publisher encoded (rulesets/encode.ts) go out as they are, and with their gRPC frame, which
// encode.ts writes in front of each message in the same allocation, so grpc-js does not copy
// every message again into a prefixed buffer of its own (a 1,000-range change to 1,000 agents:
// 29 MB more of fresh memory written, for nothing). Owns only that; must not decide what is sent.
import { type SyncRequest, SyncResponse } from '@bulkhead/proto';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { grpcFrameOf } from './rulesets/encode.js';

/** The Sync method's response serializer: pre-encoded messages are bytes already. */
export const serializeSyncResponse = (value: SyncResponse | Buffer): Buffer =>
  Buffer.isBuffer(value) ? value : Buffer.from(SyncResponse.encode(value).finish());

type Serialize = (value: unknown) => Buffer;

/**
 * Makes the call hand grpc-js the frame of each pre-framed message instead of the message.
 * grpc-js 1.14 internals: the duplex's `call` (a BaseServerInterceptingCall when the server has
 * no interceptors) frames every message in `serializeMessage`, which `sendMessage` calls. Where
 * that is not so, nothing changes (false) and grpc-js copies as before; sync-write.test.ts
 * fails then, so an upgrade that moves them is noticed.
 */
export function writePreFramed(
  call: ServerDuplexStream<SyncRequest, SyncResponse | Buffer>,
): boolean {
  const inner = (call as unknown as { call?: { serializeMessage?: Serialize } }).call;
  const own = inner?.serializeMessage;
  if (!inner || typeof own !== 'function') return false;
  inner.serializeMessage = (value) =>
    (Buffer.isBuffer(value) && grpcFrameOf(value)) || own.call(inner, value);
  return true;
}
