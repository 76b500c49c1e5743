// Simulated agents for the fleet bench: the real wire path (Enroll with a CSR over
// server-authenticated TLS, then one mTLS Sync stream per agent with its own certificate)
// with a dataplane that applies instantly. Owns the per-agent protocol and its counters; it
// measures nothing itself and must not touch the control plane other than over gRPC.
import 'reflect-metadata';
import { KeyObject, webcrypto } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { createBackoff, SYNC_CHANNEL_OPTIONS } from '@bulkhead/agent';
import {
  AgentServiceClient,
  AgentServiceService,
  createResumingCredentials,
  type EnrollRequest,
  type EnrollResponse,
  type FlowRecord,
  type GroupUpdate,
  type PolicyUpdate,
  type SyncRequest,
  type SyncResponse,
} from '@bulkhead/proto';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { openH2Call, SERVER_NAME, type TlsResume } from './fleet-h2.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
type KeyPair = Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'];

const CHANNEL_OPTIONS = { 'grpc.ssl_target_name_override': SERVER_NAME };
/**
 * A Sync channel's options, as the agent's (sync.ts), and its own subchannel pool: an agent
 * process has one channel, while grpc-js's global pool, shared by every simulated agent in this
 * process, is scanned on each connect (O(agents) per attempt, O(N^2) for a storm).
 */
const SYNC_OPTIONS = {
  ...SYNC_CHANNEL_OPTIONS,
  ...CHANNEL_OPTIONS,
  'grpc.use_local_subchannel_pool': 1,
};

/** The ranges a group update carries, in either form. */
const rangeCount = (g: GroupUpdate) =>
  g.added.length +
  g.removed.length +
  (g.packed
    ? (g.packed.addedV4.length + g.packed.removedV4.length) / 8 +
      (g.packed.addedV6.length + g.packed.removedV6.length) / 32
    : 0);

/** One P-256 key for every simulated agent (saves bench CPU); each still gets its own CSR. */
export interface SharedKey {
  keys: KeyPair;
  pem: string;
}

export async function createSharedKey(): Promise<SharedKey> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as KeyPair;
  const pem = KeyObject.from(keys.privateKey as webcrypto.CryptoKey)
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
  return { keys, pem };
}

/** Host i's name (the CN of its CSR). */
const hostName = (i: number) => `sim-${String(i).padStart(5, '0')}`;

/**
 * One CSR per host, made before the enrolment is timed: each host makes its own before it
 * calls, so the bench's CPU for them is not the control plane's rate.
 */
export async function createCsrs(count: number, key: SharedKey): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${hostName(i)}`,
      keys: key.keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
    out.push(csr.toString('pem'));
  }
  return out;
}

/** One host's Enroll: its own fresh connection, its CSR, the token; returns its identity. */
type Enroller = (req: EnrollRequest) => Promise<EnrollResponse>;

/**
 * Which client the simulated hosts call with (Enroll and Sync). `grpc-js` is the agent's own (a
 * channel per call). `h2` sends the same calls over node:http2 (fleet-h2.ts): the control plane
 * sees the same thing (a new TCP connection, a full TLS handshake with ALPN h2, an HTTP/2 session,
 * a POST of the same messages, the status in trailers) while the bench spends about half the CPU:
 * no resolver, load balancer and subchannel per channel. On 2 shared cores the bench's client
 * competes with the control plane it measures.
 */
export type BenchClient = 'grpc-js' | 'h2';

function createEnroller(client: BenchClient, target: string, caPem: string): Enroller {
  if (client === 'grpc-js') {
    // One TLS configuration (CA parsed once) for every channel: each agent has its own, made
    // once, so building it per call would be bench CPU a real fleet spreads over its hosts.
    const tls = credentials.createSsl(Buffer.from(caPem));
    return async (req) => {
      // Its own subchannel pool: channels with equal credentials would share grpc-js's global
      // pool's connection, and the control plane would not see a fresh connection per agent.
      const c = new AgentServiceClient(target, tls, {
        ...CHANNEL_OPTIONS,
        'grpc.use_local_subchannel_pool': 1,
      });
      try {
        return await new Promise<EnrollResponse>((resolve, reject) =>
          c.enroll(req, (err, res) => (err ? reject(err) : resolve(res))),
        );
      } finally {
        c.close();
      }
    };
  }
  const secureContext = createSecureContext({ ca: caPem });
  const { path, requestSerialize, responseDeserialize } = AgentServiceService.enroll;
  return (req) =>
    new Promise<EnrollResponse>((resolve, reject) => {
      let response: EnrollResponse | undefined;
      const call = openH2Call(target, secureContext, path, {
        onMessage: (m) => {
          response = responseDeserialize(m);
        },
        onEnd: (status, details) => {
          if (status === '0' && response) resolve(response);
          else reject(new Error(`Enroll: status ${status} ${details}`));
        },
      });
      call.write(requestSerialize(req));
      call.end();
    });
}

export interface SimAgentEvents {
  /** The control plane answered a Hello (Welcome). */
  onWelcome?(agent: SimAgent): void;
  /**
   * An update (all its chunks) arrived and was acked; `unchanged` = its hash equals what was
   * applied; `ranges` = group ranges it carried.
   */
  onUpdate?(agent: SimAgent, update: PolicyUpdate, ranges: number, unchanged: boolean): void;
}

export interface SimAgent {
  readonly hostname: string;
  readonly appliedHash: string;
  /** The control plane answered a Hello on the current stream. */
  readonly connected: boolean;
  /** Sync calls opened, the first one included. */
  readonly attempts: number;
  /** The current stream's Welcome said the control plane acks each telemetry batch. */
  readonly telemetryAcks: boolean;
  /** Seq of the last telemetry batch the control plane acked (0: none yet). */
  readonly lastAck: number;
  connect(): void;
  /**
   * One Telemetry message with these flows; false when there is no stream to take it.
   * `onWritten` runs once grpc-js handed the message to the connection.
   */
  sendFlows(flows: FlowRecord[], onWritten?: () => void): boolean;
  /** As sendFlows with the caller's seq (a resend repeats one); false without a stream. */
  sendBatch(seq: number, flows: FlowRecord[]): boolean;
  close(): void;
}

export interface SimAgentOptions {
  hostname: string;
  address: string;
  identity: { caPem: string; certPem: string };
  key: SharedKey;
  target: string;
  events: SimAgentEvents;
  /** Largest backoff ceiling; default the agent's (DEFAULT_BACKOFF.capMs). */
  backoffCapMs?: number;
  /** Default grpc-js, the agent's client. */
  client?: BenchClient;
  /** Ask for telemetry acks in the Hello, as the agent does (default true). */
  telemetryAcks?: boolean;
}

/** One Sync call on its own fresh connection. */
interface SyncCall {
  write(req: SyncRequest, onWritten?: () => void): void;
  cancel(): void;
}
type SyncOpener = (onMessage: (msg: SyncResponse) => void, onEnd: () => void) => SyncCall;

/** A Sync opener for one host: its TLS configuration (certificate, key, CA) is made once. */
function createSyncOpener(options: SimAgentOptions): SyncOpener {
  const ca = options.identity.caPem;
  const { target } = options;
  if ((options.client ?? 'grpc-js') === 'grpc-js') {
    // The agent's own TLS: it resumes its last session.
    const tls = createResumingCredentials(
      { caPem: ca, keyPem: options.key.pem, certPem: options.identity.certPem },
      SERVER_NAME,
    );
    let client: AgentServiceClient | undefined;
    return (onMessage, onEnd) => {
      // A fresh channel per attempt (the previous one closed), as the agent does.
      client?.close();
      client = new AgentServiceClient(target, tls, SYNC_OPTIONS);
      const c = client;
      const stream: ClientDuplexStream<SyncRequest, SyncResponse> = c.sync();
      stream.on('data', onMessage);
      stream.on('error', onEnd);
      stream.on('end', onEnd);
      stream.on('close', onEnd);
      return {
        write: (req, onWritten) => stream.write(req, () => onWritten?.()),
        cancel() {
          stream.cancel();
          c.close();
        },
      };
    };
  }
  const secureContext: SecureContext = createSecureContext({
    ca,
    key: options.key.pem,
    cert: options.identity.certPem,
  });
  const { path, requestSerialize, responseDeserialize } = AgentServiceService.sync;
  const resume: TlsResume = {};
  return (onMessage, onEnd) => {
    const call = openH2Call(
      target,
      secureContext,
      path,
      { onMessage: (m) => onMessage(responseDeserialize(m)), onEnd },
      resume,
    );
    return {
      write: (req, onWritten) => call.write(requestSerialize(req), onWritten),
      cancel: call.cancel,
    };
  };
}

/**
 * One agent's Sync stream, reconnected like the real agent's (sync.ts): a fresh connection per
 * attempt (a kept grpc-js channel would add its own reconnect backoff, up to 120 s, failing calls
 * fast meanwhile), the agent's backoff (retry.ts: full jitter, reset once the control plane
 * answered a Hello, quick retries after a lost stream).
 */
export function createSimAgent(options: SimAgentOptions): SimAgent {
  const { hostname, address, events } = options;
  const open = createSyncOpener(options);
  let call: SyncCall | undefined;
  // The agent's own schedule (retry.ts): full jitter, quick retries after a lost stream.
  const backoff = createBackoff({ capMs: options.backoffCapMs });
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let seq = 0;
  let appliedRevision = 0;

  const agent = {
    hostname,
    appliedHash: '',
    connected: false,
    attempts: 0,
    telemetryAcks: false,
    lastAck: 0,
    connect,
    sendFlows(flows: FlowRecord[], onWritten?: () => void): boolean {
      return send(++seq, flows, onWritten);
    },
    sendBatch: (n: number, flows: FlowRecord[]) => send(n, flows),
    close() {
      stopped = true;
      clearTimeout(timer);
      call?.cancel();
    },
  };

  function send(n: number, flows: FlowRecord[], onWritten?: () => void): boolean {
    if (!call || !agent.connected) return false;
    call.write(
      {
        telemetry: {
          seq: n,
          timeUnixMs: Date.now(),
          appliedHash: agent.appliedHash,
          counters: [],
          flows,
          events: [],
        },
      },
      onWritten,
    );
    return true;
  }

  function connect(): void {
    if (stopped) return;
    agent.attempts++;
    let chunks: PolicyUpdate[] = [];
    let ended = false;
    const onEnd = () => {
      if (ended) return;
      ended = true;
      if (agent.connected) backoff.lost();
      agent.connected = false;
      if (call === stream) call = undefined;
      if (stopped) return;
      timer = setTimeout(connect, backoff.next());
    };
    const onMessage = (msg: SyncResponse) => {
      if (msg.telemetryAck) agent.lastAck = msg.telemetryAck.seq;
      if (msg.welcome && !agent.connected) {
        agent.connected = true;
        agent.telemetryAcks = msg.welcome.telemetryAcks;
        backoff.reset();
        events.onWelcome?.(agent);
      }
      const u = msg.update;
      if (!u) return;
      // Chunks of one update are buffered until the last, then applied and acked once.
      chunks.push(u);
      if (!u.last) return;
      const ranges = chunks.reduce(
        (n, c) => n + c.groups.reduce((m, g) => m + rangeCount(g), 0),
        0,
      );
      chunks = [];
      if (!u.full && u.baseHash !== agent.appliedHash) {
        // Not built on what this agent holds: ask for a full sync (wiring contract 5).
        stream.write({ hello: hello() });
        return;
      }
      const unchanged = u.hash === agent.appliedHash;
      agent.appliedHash = u.hash;
      appliedRevision = u.revision;
      stream.write({
        ack: { revision: u.revision, hash: u.hash, ok: true, error: '', applyMicros: 1 },
      });
      events.onUpdate?.(agent, u, ranges, unchanged);
    };
    const stream = open(onMessage, onEnd);
    call = stream;
    stream.write({ hello: hello() });
  }

  function hello() {
    return {
      appliedRevision,
      appliedHash: agent.appliedHash,
      hostname,
      addresses: [address],
      agentVersion: 'fleet-bench',
      // As the agent (sync.ts): groups in the packed form. Turning its bytes into element text
      // is the dataplane's (render, apply), which is instant here, as it was for the text form.
      packedRanges: true,
      telemetryAcks: options.telemetryAcks ?? true,
    };
  }

  return agent;
}

export interface Enrolled {
  hostname: string;
  address: string;
  agentId: string;
  certPem: string;
}

/** Host i's (made-up, never contacted) address: 10.x.y.z, unique per index. */
export function hostAddress(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** Enrols one agent per CSR (createCsrs), `concurrency` at a time, each on its own channel. */
export async function enrolAll(options: {
  target: string;
  caPem: string;
  token: string;
  csrs: string[];
  concurrency: number;
  /** Default grpc-js, the agent's client. */
  client?: BenchClient;
}): Promise<Enrolled[]> {
  const out: Enrolled[] = [];
  const enrol = createEnroller(options.client ?? 'grpc-js', options.target, options.caPem);
  let next = 0;
  const worker = async () => {
    while (next < options.csrs.length) {
      const i = next++;
      const hostname = hostName(i);
      const address = hostAddress(i + 1);
      const res = await enrol({
        bootstrapToken: options.token,
        hostname,
        addresses: [address],
        labels: {},
        csrPem: options.csrs[i]!,
        agentVersion: 'fleet-bench',
      });
      out[i] = { hostname, address, agentId: res.agentId, certPem: res.certificatePem };
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return out;
}
