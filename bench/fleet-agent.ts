// Simulated agents for the fleet bench: the real wire path (Enroll with a CSR over
// server-authenticated TLS, then one mTLS Sync stream per agent with its own certificate)
// with a dataplane that applies instantly. Owns the per-agent protocol and its counters; it
// measures nothing itself and must not touch the control plane other than over gRPC.
import 'reflect-metadata';
import { KeyObject, webcrypto } from 'node:crypto';
import { DEFAULT_BACKOFF } from '@bulkhead/agent';
import {
  AgentServiceClient,
  type EnrollResponse,
  type FlowRecord,
  type PolicyUpdate,
  type SyncRequest,
  type SyncResponse,
} from '@bulkhead/proto';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
type KeyPair = Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'];

const SERVER_NAME = 'bulkhead-control-plane';
const CHANNEL_OPTIONS = { 'grpc.ssl_target_name_override': SERVER_NAME };

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

export interface EnrolRequest {
  target: string;
  caPem: string;
  token: string;
  hostname: string;
  address: string;
  key: SharedKey;
}

/** Enroll as the agent does: a fresh channel, a CSR, the token; returns the identity. */
export async function enrol(req: EnrolRequest): Promise<EnrollResponse> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${req.hostname}`,
    keys: req.key.keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const client = new AgentServiceClient(
    req.target,
    credentials.createSsl(Buffer.from(req.caPem)),
    CHANNEL_OPTIONS,
  );
  try {
    return await new Promise<EnrollResponse>((resolve, reject) =>
      client.enroll(
        {
          bootstrapToken: req.token,
          hostname: req.hostname,
          addresses: [req.address],
          labels: {},
          csrPem: csr.toString('pem'),
          agentVersion: 'fleet-bench',
        },
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
  } finally {
    client.close();
  }
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
}

/**
 * One agent's Sync stream, reconnected like the real agent's (one channel for its life,
 * full-jitter exponential backoff with the agent's default bounds, reset once the control plane
 * answered a Hello). The backoff is re-stated here: the agent does not export createBackoff.
 */
export function createSimAgent(options: SimAgentOptions): SimAgent {
  const { hostname, address, events } = options;
  const client = new AgentServiceClient(
    options.target,
    credentials.createSsl(
      Buffer.from(options.identity.caPem),
      Buffer.from(options.key.pem),
      Buffer.from(options.identity.certPem),
    ),
    CHANNEL_OPTIONS,
  );
  let call: ClientDuplexStream<SyncRequest, SyncResponse> | undefined;
  let ceiling: number = DEFAULT_BACKOFF.baseMs;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let seq = 0;
  let appliedRevision = 0;

  const agent = {
    hostname,
    appliedHash: '',
    connected: false,
    attempts: 0,
    connect,
    sendFlows(flows: FlowRecord[], onWritten?: () => void): boolean {
      return send(++seq, flows, onWritten);
    },
    sendBatch: (n: number, flows: FlowRecord[]) => send(n, flows),
    close() {
      stopped = true;
      clearTimeout(timer);
      call?.cancel();
      client.close();
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
      () => onWritten?.(),
    );
    return true;
  }

  function connect(): void {
    if (stopped) return;
    agent.attempts++;
    const stream = client.sync();
    call = stream;
    let chunks: PolicyUpdate[] = [];
    let ended = false;
    const onEnd = () => {
      if (ended) return;
      ended = true;
      agent.connected = false;
      if (call === stream) call = undefined;
      if (stopped) return;
      const delay = Math.floor(Math.random() * ceiling);
      ceiling = Math.min(ceiling * 2, options.backoffCapMs ?? DEFAULT_BACKOFF.capMs);
      timer = setTimeout(connect, delay);
    };
    stream.on('data', (msg: SyncResponse) => {
      if (msg.welcome && !agent.connected) {
        agent.connected = true;
        ceiling = DEFAULT_BACKOFF.baseMs;
        events.onWelcome?.(agent);
      }
      const u = msg.update;
      if (!u) return;
      // Chunks of one update are buffered until the last, then applied and acked once.
      chunks.push(u);
      if (!u.last) return;
      const ranges = chunks.reduce(
        (n, c) => n + c.groups.reduce((m, g) => m + g.added.length + g.removed.length, 0),
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
    });
    stream.on('error', onEnd);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.write({ hello: hello() });
  }

  function hello() {
    return {
      appliedRevision,
      appliedHash: agent.appliedHash,
      hostname,
      addresses: [address],
      agentVersion: 'fleet-bench',
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

/** Enrols `count` agents, `concurrency` at a time, each on its own channel with its own CSR. */
export async function enrolAll(options: {
  target: string;
  caPem: string;
  token: string;
  count: number;
  concurrency: number;
  key: SharedKey;
}): Promise<Enrolled[]> {
  const out: Enrolled[] = [];
  let next = 0;
  const worker = async () => {
    while (next < options.count) {
      const i = next++;
      const hostname = `sim-${String(i).padStart(5, '0')}`;
      const address = hostAddress(i + 1);
      const res = await enrol({ ...options, hostname, address });
      out[i] = { hostname, address, agentId: res.agentId, certPem: res.certificatePem };
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return out;
}
