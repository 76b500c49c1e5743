// The gRPC edge under hostile input: the same key rules as REST; a flood of TCP connections
// that never start TLS is cut (per-source cap, handshake timeout) while a real agent syncs.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import {
  AgentServiceClient,
  createResumingCredentials,
  type EnrollResponse,
} from '@bulkhead/proto';
import { type ChannelCredentials, credentials, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ControlPlane } from './control-plane.js';
import type { GrpcLimits } from './grpc.js';
import { SyncSession } from './sync-session.test-util.js';
import {
  enrolAgent,
  makeCsr,
  makeSelfSigned,
  restClient,
  samples,
  startTestControlPlane,
} from './test-support.js';

describe('gRPC edge', () => {
  let dir: string;
  let cp: ControlPlane;
  const clients: AgentServiceClient[] = [];

  const sockets: Socket[] = [];

  async function start(grpcLimits?: Partial<GrpcLimits>) {
    dir = mkdtempSync(join(tmpdir(), 'bh-gedge-'));
    cp = await startTestControlPlane(dir, {
      grpcLimits,
    });
  }
  beforeEach(() => start());
  /** A fresh control plane with these limits instead of the default one. */
  async function restartWith(grpcLimits: Partial<GrpcLimits>) {
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
    await start(grpcLimits);
  }
  /** A real agent with a real certificate enrols as `name` and syncs its rule set. */
  async function expectAgentSyncs(name: string, address: string) {
    const agent = await enrolAgent(cp, name, [address]);
    clients.push(agent.client);
    const s = new SyncSession(agent.client.sync());
    expect((await s.barrier()).ruleSet?.workloadId).toBe(name);
    s.stream.end();
  }
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const c of clients.splice(0)) c.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Raw TCP connections from `source` that never start TLS; each resolves `closed` when cut. */
  async function flood(n: number, source: string) {
    const opened = await Promise.all(
      Array.from({ length: n }, async () => {
        const s = connect({ host: '127.0.0.1', port: cp.grpcPort, localAddress: source });
        sockets.push(s);
        s.on('error', () => {});
        const closed = new Promise<void>((r) => s.once('close', () => r()));
        await new Promise<void>((r) => s.once('connect', r));
        return { socket: s, closed };
      }),
    );
    return opened;
  }

  it('queues a reconnecting fleet: the listen backlog is 4096, not Node default 511', () => {
    // ss shows a listening socket's backlog as its Send-Q.
    const line = execFileSync('ss', ['-Hltn', `sport = :${cp.grpcPort}`], { encoding: 'utf8' });
    const backlog = Number(line.trim().split(/\s+/)[2]);
    expect(backlog).toBe(
      Math.min(4096, Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'))),
    );
  });

  it('closes connections over the per-source cap while a real agent syncs', async () => {
    await restartWith({ maxConnectionsPerSource: 10, handshakeTimeoutMs: 600_000 });
    const conns = await flood(30, '127.0.0.2');
    // Which ones are refused depends on accept order; that 20 are, is the cap.
    let closed = 0;
    await new Promise<void>((resolve) => {
      for (const c of conns) c.closed.then(() => ++closed === 20 && resolve());
    });
    // A real agent from another address enrols and syncs through the flood.
    await expectAgentSyncs('web-1', '10.0.0.2');
    expect(conns.filter((c) => !c.socket.destroyed && !c.socket.closed)).toHaveLength(10);
  });

  it('closes connections that never finish TLS after the handshake timeout', async () => {
    await restartWith({ handshakeTimeoutMs: 200 });
    const conns = await flood(5, '127.0.0.3');
    // No timing asserted: the test's own timeout is the failure if they are held.
    await Promise.all(conns.map((c) => c.closed));
    await expectAgentSyncs('web-2', '10.0.0.3');
  });

  /** A sample of the control plane's /metrics, `name{labels}` as exported. */
  const metric = async (sample: string) =>
    samples(await (await fetch(`${cp.apiUrl}/metrics`)).text()).get(sample);
  const shedCount = (reason: string) =>
    metric(`bulkhead_grpc_connections_shed_total{reason="${reason}"}`);

  /**
   * Connections from `source` that start a TLS handshake and stall in it: a record header that
   * announces a ClientHello, and nothing after it. Each resolves `closed` when cut.
   */
  async function stalled(n: number, source: string) {
    const conns = await flood(n, source);
    for (const c of conns) c.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
    return conns;
  }

  it('queues handshakes: a connection waits untouched while the handshake places are taken, and is served when one frees', async () => {
    await restartWith({ maxHandshakes: 1, handshakeLeaseMs: 600_000, handshakeTimeoutMs: 600_000 });
    // A stalled handshake takes the only place and keeps it (no lease or timeout ends it here).
    const [stall] = await stalled(1, '127.0.0.5');
    await new Promise((r) => setTimeout(r, 100));
    let secure = false;
    const queued = tls.connect({
      host: '127.0.0.1',
      port: cp.grpcPort,
      ca: cp.caPem,
      servername: 'bulkhead-control-plane',
      ALPNProtocols: ['h2'],
    });
    queued.on('error', () => {});
    const served = new Promise<void>((r) => queued.once('secureConnect', () => r()));
    served.then(() => {
      secure = true;
    });
    // Given time to finish, it did not: it is queued, not handshaking.
    await new Promise((r) => setTimeout(r, 500));
    expect(secure).toBe(false);
    stall!.socket.destroy();
    await served;
    // A finished handshake gives its place back at once (the lease here never ends): with the
    // queued connection still open, a real agent enrols and syncs through the one place.
    await expectAgentSyncs('web-5', '10.0.0.6');
    queued.destroy();
  });

  it('stalled handshakes cannot stall the queue: each holds its place for a lease, then a real agent enrols and syncs', async () => {
    await restartWith({ maxHandshakes: 2, handshakeLeaseMs: 200, handshakeTimeoutMs: 600_000 });
    const conns = await stalled(6, '127.0.0.6');
    await expectAgentSyncs('web-3', '10.0.0.4');
    // Still open: past its lease a handshake goes on unqueued, until its own timeout.
    expect(conns.filter((c) => c.socket.destroyed || c.socket.closed)).toHaveLength(0);
  });

  it('silent connections hold a handshake place only for its lease, then time out', async () => {
    await restartWith({ maxHandshakes: 1, handshakeLeaseMs: 100, handshakeTimeoutMs: 3_000 });
    const conns = await flood(20, '127.0.0.7');
    // One place, twenty silent connections ahead: an agent is served once their leases ran out.
    await expectAgentSyncs('web-4', '10.0.0.5');
    await Promise.all(conns.map((c) => c.closed));
    expect(await shedCount('tls_failed')).toBeGreaterThanOrEqual(20);
  });

  /**
   * A raw TLS connection offering `session`: whether it resumed, and the first ticket a full
   * handshake gave (a resumed one gets none).
   */
  const openTls = (port: number, options: tls.ConnectionOptions = {}) =>
    new Promise<{ reused: boolean; ticket?: Buffer }>((resolve, reject) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port,
        ca: cp.caPem,
        servername: 'bulkhead-control-plane',
        ALPNProtocols: ['h2'],
        ...options,
      });
      s.on('error', reject);
      const done = (ticket?: Buffer) => {
        resolve({ reused: s.isSessionReused(), ticket });
        s.destroy();
      };
      // TLS 1.3 sends the tickets after a full handshake, with the server's first write
      // (HTTP/2's settings); Node's server sends none after a resumed one.
      s.once('session', done);
      s.once('secureConnect', () => s.isSessionReused() && done());
    });
  /** bulkhead_grpc_tls_handshakes_total by session kind. */
  const handshakes = async () => {
    const count = (session: string) =>
      metric(`bulkhead_grpc_tls_handshakes_total{session="${session}"}`);
    return { full: await count('full'), resumed: await count('resumed') };
  };
  /** The same data dir and gRPC port, a new process's worth of state. */
  async function restartInPlace() {
    const port = cp.grpcPort;
    await cp.stop();
    cp = await startTestControlPlane(dir, { grpcListen: `127.0.0.1:${port}` });
  }
  /**
   * A Sync on a channel of its own, as the agent opens one per attempt (closed after, so the
   * next one is a new connection): the update's workload, or the stream's error code.
   */
  const syncOnce = async (creds: ChannelCredentials) => {
    const c = new AgentServiceClient(`127.0.0.1:${cp.grpcPort}`, creds);
    try {
      const s = new SyncSession(c.sync());
      const answer = await Promise.race([s.barrier(), s.error]);
      return 'code' in answer ? answer.code : answer.ruleSet?.workloadId;
    } finally {
      c.close();
    }
  };

  it('an agent coming back after a restart resumes its TLS session, as the same agent; revoked, it is refused all the same', async () => {
    const agent = await enrolAgent(cp, 'web-1', ['10.0.0.1']);
    agent.client.close();
    // The agent's own credentials: one object for its life.
    const creds = createResumingCredentials(agent.identity, 'bulkhead-control-plane');
    expect(await syncOnce(creds)).toBe('web-1');
    expect(await handshakes()).toEqual({ full: 2, resumed: 0 }); // Enroll, then Sync

    const token = cp.initialAdminToken; // given on the first start only
    await restartInPlace();
    expect(await syncOnce(creds)).toBe('web-1');
    // No certificate in this handshake: the identity is the one the CA's key verified before.
    expect(await handshakes()).toEqual({ full: 0, resumed: 1 });

    const revoked = await restClient(cp, token)('POST', `/v1/agents/${agent.agentId}/revoke`);
    expect(revoked.json).toMatchObject({ revoked: true });
    expect(await syncOnce(creds)).toBe(status.UNAUTHENTICATED);
    expect(await handshakes()).toEqual({ full: 0, resumed: 2 });
  });

  it('a resumed session keeps the verdict of its handshake: a self-signed certificate naming a real agent stays refused', async () => {
    const agent = await enrolAgent(cp, 'web-1', ['10.0.0.1']);
    agent.client.close();
    const forged = { caPem: cp.caPem, ...(await makeSelfSigned(agent.agentId)) };
    const creds = createResumingCredentials(forged, 'bulkhead-control-plane');
    expect(await syncOnce(creds)).toBe(status.UNAUTHENTICATED);
    expect(await syncOnce(creds)).toBe(status.UNAUTHENTICATED);
    expect(await handshakes()).toEqual({ full: 2, resumed: 1 }); // Enroll, the forged Syncs
  });

  it('renews a connection past its maximum age: the stream ends, and the agent comes back resuming its session', async () => {
    // Long enough for a Sync under a loaded CI machine, short enough to wait for.
    await restartWith({ maxConnectionAgeMs: 3000, maxConnectionAgeGraceMs: 500 });
    const agent = await enrolAgent(cp, 'web-1', ['10.0.0.1']);
    agent.client.close();
    const creds = createResumingCredentials(agent.identity, 'bulkhead-control-plane');
    const c = new AgentServiceClient(`127.0.0.1:${cp.grpcPort}`, creds);
    clients.push(c);
    const s = new SyncSession(c.sync());
    expect((await s.barrier()).ruleSet?.workloadId).toBe('web-1');
    // No timing asserted: the test's own timeout is the failure if the connection is kept.
    expect(await s.error).toBeInstanceOf(Error);
    expect(await syncOnce(creds)).toBe('web-1');
    expect(await handshakes()).toEqual({ full: 2, resumed: 1 }); // Enroll, Sync; Sync again
  });

  it('takes no ticket from a control plane with another CA, and no TLS 1.2', async () => {
    const first = await openTls(cp.grpcPort);
    expect((await openTls(cp.grpcPort, { session: first.ticket })).reused).toBe(true);

    const otherDir = mkdtempSync(join(tmpdir(), 'bh-gedge-other-'));
    const other = await startTestControlPlane(otherDir);
    try {
      const elsewhere = await openTls(other.grpcPort, { ca: other.caPem, session: first.ticket });
      expect(elsewhere.reused).toBe(false);
    } finally {
      await other.stop();
      rmSync(otherDir, { recursive: true, force: true });
    }
    await expect(openTls(cp.grpcPort, { maxVersion: 'TLSv1.2' })).rejects.toThrow();
  });

  const enroll = async (labels: Record<string, string>) => {
    const { token } = (await restClient(cp)('POST', '/v1/enrollment-tokens', {})).json;
    const { csrPem } = await makeCsr('h-1');
    const c = new AgentServiceClient(
      `127.0.0.1:${cp.grpcPort}`,
      credentials.createSsl(Buffer.from(cp.caPem)),
    );
    clients.push(c);
    return new Promise<EnrollResponse>((resolve, reject) =>
      c.enroll(
        {
          bootstrapToken: token,
          hostname: 'h-1',
          addresses: [],
          labels,
          csrPem,
          agentVersion: 't',
        },
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
  };

  it.each(['__proto__', 'constructor'])('refuses an Enroll label key %s naming it', async (key) => {
    // An own property named __proto__, as a decoder of the wire map would see it.
    const labels = JSON.parse(`{"app":"web","${key}":"x"}`);
    await expect(enroll(labels)).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringContaining(`labels.${key}`),
    });
    expect((await restClient(cp)('GET', '/v1/workloads')).json).toEqual([]);
  });
});
