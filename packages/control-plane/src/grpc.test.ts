import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServiceClient, Direction, type EnrollResponse, Verdict } from '@bulkhead/proto';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ControlPlane } from './control-plane.js';
import { createPki } from './pki.js';
import { SyncSession } from './sync-session.test-util.js';
import { makeCsr, makeSelfSigned, restClient, startTestControlPlane } from './test-support.js';

/** A syslog receiver on 127.0.0.1:0 that parses RFC 5424 messages with JSON bodies. */
class SyslogListener {
  readonly messages: { msgId: string; body: Record<string, unknown> }[] = [];
  private waiters: Array<() => void> = [];
  private constructor(readonly socket: Socket) {
    socket.on('message', (buf) => {
      const text = buf.toString('utf8');
      // <PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID [SD] MSG
      const msgId = text.split(' ')[5] ?? '';
      this.messages.push({ msgId, body: JSON.parse(text.slice(text.indexOf('] {') + 2)) });
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async open(): Promise<SyslogListener> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return new SyslogListener(socket);
  }
  get port(): number {
    return this.socket.address().port;
  }
  /** Resolves with the first message matching; the test's timeout is the failure. */
  async waitFor(match: (m: SyslogListener['messages'][number]) => boolean) {
    for (;;) {
      const hit = this.messages.find(match);
      if (hit) return hit;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

describe('gRPC agent service', () => {
  let dir: string;
  let cp: ControlPlane;
  let siem: SyslogListener;
  const clients: AgentServiceClient[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-grpc-'));
    siem = await SyslogListener.open();
    cp = await startTestControlPlane(dir, {
      siem: [`syslog+udp://127.0.0.1:${siem.port}?format=json`],
      siemOptions: { aggregateWindowMs: 0, rateLimit: false },
    });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await cp.stop();
    siem.socket.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // A new control plane each test: the caller is made per call.
  const api = (method: string, path: string, body?: unknown) => restClient(cp)(method, path, body);

  function client(creds = credentials.createSsl(Buffer.from(cp.caPem))): AgentServiceClient {
    const c = new AgentServiceClient(`127.0.0.1:${cp.grpcPort}`, creds);
    clients.push(c);
    return c;
  }

  function enroll(
    token: string,
    hostname = 'db-1',
    csrPem?: string,
    addresses = ['10.0.0.2'],
  ): Promise<EnrollResponse> {
    return new Promise((resolve, reject) =>
      client().enroll(
        {
          bootstrapToken: token,
          hostname,
          addresses,
          labels: { app: 'db', env: 'dev' },
          csrPem: csrPem ?? '',
          agentVersion: '0.1.0',
        },
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
  }

  async function enrolled(
    hostname = 'db-1',
    options: { addresses?: string[]; token?: Record<string, unknown> } = {},
  ) {
    const tokenBody = { labels: { env: 'prod' }, ...options.token };
    const { token } = (await api('POST', '/v1/enrollment-tokens', tokenBody)).json;
    const { csrPem, keyPem } = await makeCsr(hostname);
    const res = await enroll(token, hostname, csrPem, options.addresses);
    const creds = credentials.createSsl(
      Buffer.from(cp.caPem),
      Buffer.from(keyPem),
      Buffer.from(res.certificatePem),
    );
    return { res, creds, keyPem };
  }

  it('refuses Enroll with an unknown or used-up bootstrap token', async () => {
    const { csrPem } = await makeCsr();
    await expect(enroll('bhe_nope', 'db-1', csrPem)).rejects.toMatchObject({
      code: status.UNAUTHENTICATED,
    });
    const { token } = (await api('POST', '/v1/enrollment-tokens', { maxUses: 1 })).json;
    await enroll(token, 'db-1', csrPem);
    await expect(enroll(token, 'db-2', csrPem)).rejects.toMatchObject({
      code: status.UNAUTHENTICATED,
    });
  });

  it('enrols: workload with token labels over request labels, monitor mode, signed cert, audit entry', async () => {
    const { res } = await enrolled();
    expect(res.workloadId).toBe('db-1');
    expect(res.caPem).toBe(cp.caPem);
    const w = (await api('GET', '/v1/workloads/db-1')).json;
    expect(w).toMatchObject({
      addresses: ['10.0.0.2'],
      labels: { app: 'db', env: 'prod' },
      mode: { ingress: 'monitor', egress: 'monitor' },
    });
    const audit = (await api('GET', '/v1/audit')).json;
    expect(audit[0]).toMatchObject({ action: 'agent.enroll', target: res.agentId });
  });

  it('syncs: a full sync on Hello, a provisioned change as a delta, records acks', async () => {
    const { res, creds } = await enrolled();
    await api('PUT', '/v1/services/pg', { ports: [{ protocol: 'tcp', port: 5432 }] });
    const s = new SyncSession(client(creds).sync());
    s.send({
      hello: {
        appliedRevision: 0,
        appliedHash: '',
        hostname: 'db-1',
        addresses: ['10.0.0.2'],
        agentVersion: '0.1.0',
        packedRanges: false,
        telemetryAcks: false,
      },
    });
    const initial = await s.next();
    expect(initial).toMatchObject({ full: true, baseHash: '', groups: [] });
    expect(initial.ruleSet).toMatchObject({ workloadId: 'db-1', rules: [] });

    await api('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: [{ cidr: '10.1.0.0/16' }], services: ['pg'] }],
    });
    const prov = (await api('POST', '/v1/provision', { note: 'db' })).json;
    expect(prov).toMatchObject({ revision: 1, changed: ['db-1'], unchanged: 0 });
    const pushed = await s.next();
    expect(pushed).toMatchObject({ revision: 1, full: false, baseHash: initial.hash });
    expect(pushed.ruleSet!.rules.map((r) => r.id)).toEqual(['db/ingress/0']);
    expect(pushed.groups).toEqual([
      {
        id: pushed.ruleSet!.rules[0]!.groups[0],
        created: true,
        deleted: false,
        added: [{ from: '10.1.0.0', to: '10.1.255.255' }],
        removed: [],
      },
    ]);

    s.send({ ack: { revision: 1, hash: pushed.hash, ok: true, error: '', applyMicros: 1234 } });
    await s.barrier();
    const agents = (await api('GET', '/v1/agents')).json;
    expect(agents).toEqual([
      expect.objectContaining({
        id: res.agentId,
        workload: 'db-1',
        connected: true,
        appliedRevision: 1,
        appliedHash: pushed.hash,
        desiredHash: pushed.hash,
        inSync: true,
        lastApplyMicros: 1234,
        version: 't',
        revoked: false,
      }),
    ]);
    s.stream.end();
  });

  it('a Hello with the current hash gets only a Welcome; new addresses in its ranges recompile and push', async () => {
    const { res, creds } = await enrolled('db-1', { token: { scope: { cidrs: ['10.0.0.0/24'] } } });
    const s = new SyncSession(client(creds).sync());
    const current = await s.barrier();
    expect(s.welcomes).toHaveLength(1); // the Welcome came before the full sync
    s.send({
      hello: {
        appliedRevision: 0,
        appliedHash: current.hash,
        hostname: 'db-1',
        addresses: ['10.0.0.2'],
        agentVersion: 't',
        packedRanges: false,
        telemetryAcks: false,
      },
    });
    // The barrier's full sync is the next message: the Hello above brought none.
    expect((await s.barrier()).hash).toBe(current.hash);
    // ...but every Hello was answered.
    expect(s.welcomes).toEqual(
      Array(3).fill({ agentId: res.agentId, workloadId: 'db-1', telemetryAcks: false }),
    );
    // Another workload whose policy peers on db's address sees the change.
    await enrolled('web-1', { addresses: ['10.0.0.3'] });
    await api('PUT', '/v1/policies/web', {
      scope: { matchLabels: { app: 'db' } },
      egress: [{ action: 'allow', peers: [{ selector: { matchLabels: { env: 'prod' } } }] }],
    });
    await api('POST', '/v1/provision', { note: 'grpc test' });
    const afterProvision = await s.next();
    s.send({
      hello: {
        appliedRevision: 1,
        appliedHash: afterProvision.hash,
        hostname: 'db-1',
        addresses: ['10.0.0.9'],
        agentVersion: 't',
        packedRanges: false,
        telemetryAcks: false,
      },
    });
    expect(afterProvision).toMatchObject({ full: false, revision: 1 });
    // The claim applied while the Hello was answered: one full sync, no delta before it.
    const moved = await s.next();
    expect(moved.full).toBe(true);
    expect(moved.hash).not.toBe(afterProvision.hash);
    expect(JSON.stringify(moved.groups)).toContain('10.0.0.9');
    expect((await api('GET', '/v1/workloads/db-1')).json.addresses).toEqual(['10.0.0.9']);
    s.stream.end();
  });

  /** A telemetry batch of one counter. */
  const counterBatch = (seq: number, packets: number) => ({
    telemetry: {
      seq,
      timeUnixMs: 0,
      appliedHash: '',
      flows: [],
      events: [],
      counters: [
        {
          ruleId: 'default',
          direction: Direction.DIRECTION_INGRESS,
          verdict: Verdict.VERDICT_WOULD_DENY,
          packets,
          bytes: packets * 60,
        },
      ],
    },
  });
  const countedPackets = async () =>
    (await api('GET', '/v1/counters?workload=db-1')).json.map(
      (c: { packets: number }) => c.packets,
    );

  it('counts a telemetry batch once even when resent with the same seq', async () => {
    const { creds } = await enrolled();
    const s = new SyncSession(client(creds).sync());
    await s.barrier();
    s.send(counterBatch(1, 5));
    s.send(counterBatch(1, 5));
    s.send(counterBatch(2, 3));
    await s.barrier();
    expect((await api('GET', '/v1/counters?workload=db-1')).json).toEqual([
      {
        workload: 'db-1',
        ruleId: 'default',
        direction: 'ingress',
        verdict: 'would-deny',
        packets: 8,
        bytes: 480,
      },
    ]);
    s.stream.end();
  });

  it('acks each telemetry batch once stored (a resent one too), on a stream that asked only', async () => {
    const { creds } = await enrolled();
    const plain = new SyncSession(client(creds).sync());
    await plain.barrier();
    expect(plain.welcomes[0]!.telemetryAcks).toBe(false);
    plain.send(counterBatch(1, 5));
    await plain.barrier();
    expect(await countedPackets()).toEqual([5]);
    expect(plain.telemetryAcks).toEqual([]);
    plain.stream.end();

    const s = new SyncSession(client(creds).sync(), false, true);
    await s.barrier();
    expect(s.welcomes[0]!.telemetryAcks).toBe(true);
    // Seq 1 again (its stream died before an ack, as far as the agent knows), then seq 2.
    s.send(counterBatch(1, 5));
    s.send(counterBatch(2, 3));
    await s.barrier();
    expect(s.telemetryAcks).toEqual([1, 2]);
    expect(await countedPackets()).toEqual([8]);
    s.stream.end();
  });

  it('stores discovered flows and agent events from telemetry', async () => {
    const { creds } = await enrolled();
    const s = new SyncSession(client(creds).sync());
    await s.barrier();
    // Telemetry is refused outside [now - flow retention, now + 5 min].
    const at = Date.now() - 60_000;
    s.send({
      telemetry: {
        seq: 1,
        timeUnixMs: at,
        appliedHash: '',
        counters: [],
        flows: [
          {
            direction: Direction.DIRECTION_INGRESS,
            src: '10.0.0.7',
            dst: '10.0.0.2',
            protocol: 6,
            port: 5432,
            verdict: Verdict.VERDICT_WOULD_DENY,
            ruleId: 'default',
            packets: 2,
            bytes: 120,
            firstSeenUnixMs: 0,
            lastSeenUnixMs: 0,
          },
        ],
        events: [{ code: 'FLOW_TABLE_FULL', message: 'full', timeUnixMs: 0, attributes: {} }],
      },
    });
    await s.barrier();
    expect((await api('GET', '/v1/flows?workload=db-1&verdict=would-deny')).json).toEqual({
      flows: [
        {
          src: { address: '10.0.0.7', ipLists: [] },
          dst: { address: '10.0.0.2', workload: 'db-1', labels: expect.any(Object) },
          direction: 'ingress',
          reportedBy: 'db-1',
          protocol: 'tcp',
          port: 5432,
          verdict: 'would-deny',
          ruleId: 'default',
          connections: 2,
          bytes: 120,
          firstSeen: new Date(at).toISOString(),
          lastSeen: new Date(at).toISOString(),
          // No policy selects db-1's ingress yet.
          noPolicy: [{ workload: 'db-1', direction: 'ingress' }],
        },
      ],
    });
    expect(agentEvents((await api('GET', '/v1/events')).json)).toMatchObject([
      { code: 'FLOW_TABLE_FULL', workload: 'db-1' },
    ]);
    s.stream.end();
  });

  it('a burst of batches on one stream, one resent: each flow counted once, the agent-side drops stored', async () => {
    const { creds } = await enrolled();
    const s = new SyncSession(client(creds).sync());
    await s.barrier();
    const at = Date.now() - 60_000;
    const batch = (seq: number) => ({
      seq,
      timeUnixMs: at,
      appliedHash: '',
      counters: [],
      // 900 new dependencies per batch: 10.1.<seq>.<i>:443 -> db-1.
      flows: Array.from({ length: 900 }, (_, i) => ({
        direction: Direction.DIRECTION_INGRESS,
        src: `10.1.${seq}.${i >> 2}`,
        dst: '10.0.0.2',
        protocol: 6,
        port: 443 + (i & 3),
        verdict: Verdict.VERDICT_ALLOWED,
        ruleId: 'default',
        packets: 1,
        bytes: 60,
        firstSeenUnixMs: at,
        lastSeenUnixMs: at,
      })),
      events:
        seq === 10
          ? [
              {
                code: 'FLOWS_DROPPED',
                message: '1234 flows dropped',
                timeUnixMs: at,
                attributes: { count: '1234' },
              },
            ]
          : [],
    });
    // Written without waiting, one seq resent as after a reconnect: the ingest takes them one
    // at a time from the stream (it is paused until each is written), then the barrier's Hello.
    for (let seq = 1; seq <= 10; seq++) s.send({ telemetry: batch(seq) });
    s.send({ telemetry: batch(5) });
    await s.barrier();
    const { flows } = (await api('GET', '/v1/flows?workload=db-1&limit=10000')).json;
    expect(flows).toHaveLength(9000);
    expect(flows.every((f: { connections: number }) => f.connections === 1)).toBe(true);
    expect(agentEvents((await api('GET', '/v1/events')).json)).toMatchObject([
      { code: 'FLOWS_DROPPED', workload: 'db-1', attributes: { count: '1234' } },
    ]);
    s.stream.end();
  });

  it('ingests flows once across a duplicate seq and exports denied flows and audit entries to the SIEM', async () => {
    const { res, creds } = await enrolled();
    const s = new SyncSession(client(creds).sync());
    await s.barrier();
    const t0 = Date.now() - 3_600_000;
    const flow = (port: number, verdict: Verdict, packets: number) => ({
      direction: Direction.DIRECTION_INGRESS,
      src: '10.0.0.7',
      dst: '10.0.0.2',
      protocol: 6,
      port,
      verdict,
      ruleId: 'default',
      packets,
      bytes: packets * 60,
      firstSeenUnixMs: t0,
      lastSeenUnixMs: t0 + 1_800_000,
    });
    const batch = {
      seq: 1,
      timeUnixMs: t0 + 3_600_000,
      appliedHash: '',
      counters: [],
      events: [
        {
          code: 'DATAPLANE_TAMPERED',
          message: 'table changed outside the agent; repaired',
          timeUnixMs: t0 + 3_600_000,
          attributes: { chains: 'input' },
        },
      ],
      flows: [flow(22, Verdict.VERDICT_DENIED, 3), flow(443, Verdict.VERDICT_ALLOWED, 5)],
    };
    s.send({ telemetry: batch });
    s.send({ telemetry: batch });
    await s.barrier();
    const flows = (await api('GET', '/v1/flows?workload=db-1')).json.flows;
    expect(
      flows.map((f: { port: number; connections: number }) => [f.port, f.connections]),
    ).toEqual([
      [22, 3],
      [443, 5],
    ]);

    // What the agent saw of its host (here a repaired tamper) reaches the SIEM too, once.
    const tampered = await siem.waitFor((m) => m.msgId === 'DATAPLANE_TAMPERED');
    expect(tampered.body).toMatchObject({
      kind: 'agent-event',
      workload: 'db-1',
      code: 'DATAPLANE_TAMPERED',
      attributes: { chains: 'input' },
    });
    const denied = await siem.waitFor((m) => m.msgId === 'FLOW_DENIED');
    expect(denied.body).toMatchObject({
      kind: 'flow',
      verdict: 'denied',
      workload: 'db-1',
      dstWorkload: 'db-1',
      src: '10.0.0.7',
      protocol: 'tcp',
      port: 22,
      connections: 3,
    });
    // An audited write after the flows; UDP on loopback keeps order, so once its event is
    // in, everything emitted before it is too.
    await api('PUT', '/v1/services/ssh', { ports: [{ protocol: 'tcp', port: 22 }] });
    const audit = await siem.waitFor((m) => m.msgId === 'AUDIT' && m.body.action === 'service.put');
    expect(audit.body).toMatchObject({ actor: 'initial-admin', target: 'ssh' });
    expect(siem.messages.filter((m) => m.msgId.startsWith('FLOW_'))).toHaveLength(1);
    expect(siem.messages.filter((m) => m.msgId === 'DATAPLANE_TAMPERED')).toHaveLength(1);
    expect(siem.messages.find((m) => m.body.action === 'agent.enroll')?.body.target).toBe(
      res.agentId,
    );
    s.stream.end();
  });

  it('a host enrolling again with a token made for its workload replaces its old agent identity', async () => {
    const first = await enrolled();
    const s = new SyncSession(client(first.creds).sync());
    await s.barrier();
    const second = await enrolled('db-1', { token: { workload: 'db-1' } });
    expect((await s.error).code).toBe(status.UNAUTHENTICATED);
    const agents = (await api('GET', '/v1/agents')).json as { id: string; revoked: boolean }[];
    expect(agents.map((a) => [a.id, a.revoked]).sort()).toEqual(
      [
        [first.res.agentId, true],
        [second.res.agentId, false],
      ].sort(),
    );
  });

  it('refuses Sync without a client certificate', async () => {
    const s = new SyncSession(client().sync());
    s.send({
      hello: {
        appliedRevision: 0,
        appliedHash: '',
        hostname: 'x',
        addresses: [],
        agentVersion: 't',
        packedRanges: false,
        telemetryAcks: false,
      },
    });
    expect((await s.error).code).toBe(status.UNAUTHENTICATED);
  });

  /** A Sync on `creds` gets no Welcome: UNAUTHENTICATED, or UNAVAILABLE if TLS refused it. */
  async function expectSyncRefused(creds: ReturnType<typeof credentials.createSsl>) {
    const s = new SyncSession(client(creds).sync());
    s.send({
      hello: {
        appliedRevision: 0,
        appliedHash: '',
        hostname: 'x',
        addresses: [],
        agentVersion: 't',
        packedRanges: false,
        telemetryAcks: false,
      },
    });
    await expect(s.next()).rejects.toSatisfy(
      (e: ServiceError) => e.code === status.UNAUTHENTICATED || e.code === status.UNAVAILABLE,
    );
  }

  /**
   * A Sync with a certificate another CA issued, naming `agentId`, is refused. OpenSSL may already
   * drop the handshake (the foreign CA has our CA's name but not its key, so the signature check
   * errors): UNAVAILABLE. Either way no RuleSet is ever sent.
   */
  async function expectForeignCertRefused(agentId: string): Promise<void> {
    const foreign = await createPki({ dir: join(dir, 'foreign-ca') });
    const { csrPem, keyPem } = await makeCsr();
    const { certificatePem } = foreign.issueClientCert(await foreign.checkCsr(csrPem), agentId);
    await expectSyncRefused(
      credentials.createSsl(
        Buffer.from(cp.caPem),
        Buffer.from(keyPem),
        Buffer.from(certificatePem),
      ),
    );
  }

  it('refuses Sync with a certificate from another CA', async () => {
    await expectForeignCertRefused('agent-x');
  });

  it("refuses another CA's certificate naming an agent whose own certificate was verified", async () => {
    const { res, creds } = await enrolled();
    const ok = new SyncSession(client(creds).sync());
    await ok.barrier();
    // A forged certificate with the same agent id must not ride on the real one's stream.
    await expectForeignCertRefused(res.agentId);
  });

  it('refuses a self-signed certificate naming a real agent, and an expired one our CA issued it', async () => {
    const { res, creds } = await enrolled();
    const pem = (x: { keyPem: string; certPem: string }) =>
      credentials.createSsl(Buffer.from(cp.caPem), Buffer.from(x.keyPem), Buffer.from(x.certPem));
    // For client auth, CN = the agent's id, valid now: only the handshake's verification refuses it.
    await expectSyncRefused(pem(await makeSelfSigned(res.agentId)));
    // The CA's own key two years ago: a certificate valid for a year, so expired now.
    const past = await createPki({
      dir: join(dir, 'ca'),
      now: () => new Date(Date.now() - 2 * 365 * 86_400_000),
    });
    const { csrPem, keyPem } = await makeCsr('db-1');
    const { certificatePem } = past.issueClientCert(await past.checkCsr(csrPem), res.agentId);
    await expectSyncRefused(pem({ keyPem, certPem: certificatePem }));
    // The agent's own certificate still syncs.
    await new SyncSession(client(creds).sync()).barrier();
  });

  it('a stop that leaves connections to the exit serves nothing more on them', async () => {
    const { creds } = await enrolled();
    const agent = client(creds);
    const s = new SyncSession(agent.sync());
    await s.barrier();
    let oldStreamError: ServiceError | undefined;
    void s.error.then((e) => (oldStreamError = e));

    await cp.stop({ leaveConnections: true });
    // The store is closed: a Hello that reached the fleet would be answered (a second Welcome)
    // or fail the stream.
    s.hello();
    // Streams are handled in order on the connection, which is still open, and answered only
    // with a refusal.
    const next = new SyncSession(agent.sync());
    next.hello();
    expect(await next.error).toMatchObject({
      code: status.UNAVAILABLE,
      details: 'control plane shutting down',
    });
    await expect(
      new Promise((resolve, reject) =>
        agent.enroll(
          {
            bootstrapToken: 'x',
            hostname: 'h',
            addresses: [],
            labels: {},
            csrPem: '',
            agentVersion: 't',
          },
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      ),
    ).rejects.toMatchObject({ code: status.UNAVAILABLE, details: 'control plane shutting down' });
    expect(oldStreamError).toBeUndefined();
    expect(s.welcomes).toHaveLength(1);
    expect(s.pending).toBe(0);
  });

  it('revoking an agent closes its stream and refuses its next Sync', async () => {
    const { res, creds } = await enrolled();
    const s = new SyncSession(client(creds).sync());
    await s.barrier();
    const revoked = await api('POST', `/v1/agents/${res.agentId}/revoke`);
    expect(revoked.json).toMatchObject({ id: res.agentId, revoked: true, connected: false });
    expect((await s.error).code).toBe(status.UNAUTHENTICATED);

    // The same certificate, verified in the handshake: refused all the same.
    const again = new SyncSession(client(creds).sync());
    again.send({
      hello: {
        appliedRevision: 0,
        appliedHash: '',
        hostname: 'x',
        addresses: [],
        agentVersion: 't',
        packedRanges: false,
        telemetryAcks: false,
      },
    });
    expect((await again.error).code).toBe(status.UNAUTHENTICATED);
  });
});

/** The events agents reported (the flows also raise the control plane's anomaly events). */
function agentEvents(events: { code: string }[]) {
  return events.filter((e) => !e.code.startsWith('ANOMALY_'));
}
