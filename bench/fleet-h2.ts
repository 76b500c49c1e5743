// gRPC over node:http2 for the fleet bench's simulated hosts: the wire the control plane sees
// from grpc-js (a new TCP connection, a full TLS handshake with ALPN h2, one HTTP/2 session, a
// POST of the method's path, length-prefixed messages, the status in trailers) without grpc-js's
// client machinery per channel (resolver, load balancer, subchannel, channel options), which cost
// the simulated fleet more CPU than the control plane it measures (bench/README.md). Owns the
// framing and one call per session; must not know the agent protocol (fleet-agent.ts does).
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { SecureContext } from 'node:tls';
import * as tls from 'node:tls';

/** The server name in the control plane's certificate. */
export const SERVER_NAME = 'bulkhead-control-plane';

/** One gRPC message frame: uncompressed flag, 4-byte big-endian length, the message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/**
 * Splits a byte stream into gRPC messages (frames may arrive split or several per chunk). A
 * message that spans chunks is copied once, when its last byte arrived, as grpc-js's decoder
 * does; the pieces are not joined again on every chunk (a 29 kB update arrives in several:
 * ~0.2 s of `Buffer.concat` in a profile of the 1,000-agent propagation, bench/README.md).
 */
export function createFrameReader(onMessage: (message: Buffer) => void): (chunk: Buffer) => void {
  let chunks: Buffer[] = [];
  let buffered = 0;
  /** The length of the message being received (-1: its prefix has not arrived yet). */
  let size = -1;
  return (chunk) => {
    chunks.push(chunk);
    buffered += chunk.length;
    for (;;) {
      if (size < 0) {
        if (buffered < 5) return;
        const head = chunks[0]!.length >= 5 ? chunks[0]! : Buffer.concat(chunks, 5);
        size = head.readUInt32BE(1);
      }
      if (buffered < 5 + size) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, buffered);
      onMessage(all.subarray(5, 5 + size));
      const rest = all.subarray(5 + size);
      chunks = rest.length > 0 ? [rest] : [];
      buffered = rest.length;
      size = -1;
    }
  };
}

export interface H2Call {
  /** Writes one message; `onWritten` once it was handed to the session. */
  write(message: Uint8Array, onWritten?: () => void): void;
  /** Ends the request side (unary calls). */
  end(): void;
  /** Drops the call and its connection. */
  cancel(): void;
}

export interface H2CallHandlers {
  onMessage(message: Buffer): void;
  /** Once per call, with the gRPC status ('0' = OK; undefined when the connection failed). */
  onEnd(status: string | undefined, details: string): void;
}

/** The last TLS session ticket a host got: offered on its next connection, as the agent does. */
export interface TlsResume {
  session?: Buffer;
}

/**
 * Opens one call on its own connection (a fresh session per call, as the agent's fresh channel
 * per attempt): `secureContext` holds the CA and, for Sync, the host's certificate and key;
 * `resume` (Sync), the ticket to offer, replaced by those the connection brings. TLS and the
 * HTTP/2 session are set up once TCP connected, in a turn of their own (inTurn): the control
 * plane sees the same (a TCP connection, then the ClientHello), and an attempt it refuses (down,
 * restarting) costs the simulated fleet a socket, not a TLS socket and a session per agent per
 * retry.
 */
export function openH2Call(
  target: string,
  secureContext: SecureContext,
  path: string,
  handlers: H2CallHandlers,
  resume?: TlsResume,
): H2Call {
  const [host, port] = splitTarget(target);
  let status: string | undefined;
  let details = '';
  let ended = false;
  let session: http2.ClientHttp2Session | undefined;
  let stream: http2.ClientHttp2Stream | undefined;
  // Writes before the stream exists (the Hello right after open), in order.
  let pending: { frame: Buffer; onWritten?: () => void }[] | undefined = [];
  let endPending = false;
  const tcp = net.connect({ host, port });
  const finish = () => {
    if (ended) return;
    ended = true;
    pending = undefined;
    if (session) session.destroy();
    else tcp.destroy();
    handlers.onEnd(status, details);
  };
  tcp.on('error', finish);
  tcp.once('close', finish);
  tcp.once('connect', () =>
    inTurn(() => {
      if (ended) return;
      const s = http2.connect(`https://${target}`, {
        createConnection: () => {
          const t = tls.connect({
            socket: tcp,
            secureContext,
            servername: SERVER_NAME,
            ALPNProtocols: ['h2'],
            session: resume?.session,
          });
          if (resume) t.on('session', (ticket: Buffer) => (resume.session = ticket));
          return t;
        },
      });
      session = s;
      s.on('error', finish);
      s.on('close', finish);
      const st = s.request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream = st;
      const readStatus = (h: http2.IncomingHttpHeaders) => {
        if (h['grpc-status'] === undefined) return;
        status = String(h['grpc-status']);
        details = decodeURIComponent(String(h['grpc-message'] ?? ''));
      };
      st.on('response', readStatus); // a trailers-only answer (an error) has its status here
      st.on('trailers', readStatus);
      st.on(
        'data',
        createFrameReader((m) => !ended && handlers.onMessage(m)),
      );
      st.on('error', finish);
      st.on('close', finish);
      for (const w of pending ?? []) st.write(w.frame, () => w.onWritten?.());
      pending = undefined;
      if (endPending) st.end();
    }),
  );
  return {
    write(message, onWritten) {
      if (ended) return;
      const frame = grpcFrame(message);
      if (pending) pending.push({ frame, onWritten });
      else if (stream?.writable) stream.write(frame, () => onWritten?.());
    },
    end() {
      if (stream) stream.end();
      else endPending = true;
    },
    cancel: finish,
  };
}

/**
 * Runs `start` in an event-loop turn of its own, after those queued before it. Starting TLS and
 * HTTP/2 is the costly part of a simulated agent's reconnect (~0.7 ms, most of it OpenSSL
 * building the ClientHello). When a restarted control plane's port takes the fleet's
 * connections, their TCP connects complete together and Node runs up to 1,024 completions in one
 * turn: a second of ClientHellos during which no answer the control plane already sent is read,
 * although every agent is a host of its own. One start a turn lets the answers in between.
 */
function inTurn(start: () => void): void {
  starts.push(start);
  if (starts.length - startsHead === 1) setImmediate(nextStart);
}
const starts: (() => void)[] = [];
let startsHead = 0;
function nextStart(): void {
  const start = starts[startsHead++]!;
  if (startsHead === starts.length) {
    starts.length = 0;
    startsHead = 0;
  } else setImmediate(nextStart);
  start();
}

/** `host:port` or `[v6]:port`. */
function splitTarget(target: string): [string, number] {
  const i = target.lastIndexOf(':');
  return [target.slice(0, i).replace(/^\[|\]$/g, ''), Number(target.slice(i + 1))];
}
