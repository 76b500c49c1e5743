// The agent in-process against a real gRPC server on 127.0.0.1 (TLS with a test CA) and the
// kernel-like fake nftables: enrolment, Hello, apply + ack, telemetry, reconnect, restart.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import {
  type AgentServiceServer,
  AgentServiceService,
  Direction,
  type EnrollRequest,
  Mode,
  type SyncRequest,
  type SyncResponse,
  Verdict,
} from '@bulkhead/proto';
import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from './agent.js';
import { fixtureChain, fixtureRuleSet } from './fixture.test-util.js';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
type Keys = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

async function keys(): Promise<Keys> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as Keys;
}

async function pkcs8Pem(key: Keys['privateKey']): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`gave up waiting for: ${what}`);
}

interface TestControlPlane {
  port: number;
  caPem: string;
  enrolls: EnrollRequest[];
  received: SyncRequest[];
  streams: ServerDuplexStream<SyncRequest, SyncResponse>[];
  close(): Promise<void>;
}

async function startControlPlane(): Promise<TestControlPlane> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
  const now = Date.now();
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) };
  const caKeys = await keys();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=test-ca',
    keys: caKeys,
    signingAlgorithm: ALG,
    ...validity,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  const srvKeys = await keys();
  const srv = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=bulkhead-control-plane',
    issuer: ca.subject,
    publicKey: srvKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ALG,
    ...validity,
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'bulkhead-control-plane' }]),
    ],
  });
  const cp: Omit<TestControlPlane, 'port' | 'close'> = {
    caPem: ca.toString('pem'),
    enrolls: [],
    received: [],
    streams: [],
  };
  const server = new Server();
  let serial = 10;
  const srvKeyPem = await pkcs8Pem(srvKeys.privateKey);
  const impl: AgentServiceServer = {
    enroll: (call, cb) => {
      cp.enrolls.push(call.request);
      const csr = new x509.Pkcs10CertificateRequest(call.request.csrPem);
      x509.X509CertificateGenerator.create({
        serialNumber: String(serial++),
        subject: csr.subject,
        issuer: ca.subject,
        publicKey: csr.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: ALG,
        ...validity,
      }).then(
        (cert) =>
          cb(null, {
            agentId: 'agent-1',
            workloadId: 'web-1',
            certificatePem: cert.toString('pem'),
            caPem: cp.caPem,
          }),
        (err) => cb(err, null),
      );
    },
    sync: (call: ServerDuplexStream<SyncRequest, SyncResponse>) => {
      cp.streams.push(call);
      call.on('data', (m: SyncRequest) => cp.received.push(m));
      call.on('error', () => undefined);
    },
  };
  server.addService(AgentServiceService, impl);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      ServerCredentials.createSsl(
        null,
        [{ private_key: Buffer.from(srvKeyPem), cert_chain: Buffer.from(srv.toString('pem')) }],
        false,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  return {
    ...cp,
    port,
    close: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
  };
}

describe('agent', () => {
  let cp: TestControlPlane;
  let stateDir: string;
  let kernel: FakeNft;
  const agents: Agent[] = [];
  const logger = pino({ level: process.env.AGENT_TEST_LOG ?? 'silent' });

  beforeAll(async () => {
    // Fresh per file; each test below reuses the server and clears what it recorded.
    cp = await startControlPlane();
    return () => cp.close();
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-agent-'));
    kernel = createFakeNft();
    cp.enrolls.length = 0;
    cp.received.length = 0;
    cp.streams.length = 0;
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await rm(stateDir, { recursive: true, force: true });
  });

  function agent(token: string | null = 'tok-1'): Agent {
    const a = createAgent({
      controlPlane: `127.0.0.1:${cp.port}`,
      caPem: cp.caPem,
      bootstrapToken: token ?? undefined,
      stateDir,
      hostname: 'web-1.test',
      addresses: ['10.0.0.5'],
      labels: { app: 'web' },
      admin: { cidrs: ['10.8.0.0/16'], port: 22 },
      metricsListen: { host: '127.0.0.1', port: 0 },
      telemetryIntervalMs: 50,
      nftBackend: 'auto',
      serverName: 'bulkhead-control-plane',
      logger,
      driver: kernel,
      backoffMs: { min: 20, max: 100 },
    });
    agents.push(a);
    return a;
  }

  const of = <K extends keyof SyncRequest>(k: K) =>
    cp.received.map((m) => m[k]).filter((v): v is NonNullable<SyncRequest[K]> => v !== undefined);

  it('enrols once, syncs, applies and acks, streams telemetry, reconnects', async () => {
    const a = agent();
    await a.start();
    await until(() => of('hello').length === 1, 'hello');
    expect(cp.enrolls).toHaveLength(1);
    expect(cp.enrolls[0]).toMatchObject({
      bootstrapToken: 'tok-1',
      hostname: 'web-1.test',
      labels: { app: 'web' },
    });
    expect(cp.enrolls[0]!.csrPem).toContain('BEGIN CERTIFICATE REQUEST');
    expect((await stat(join(stateDir, 'agent.key'))).mode & 0o777).toBe(0o600);
    expect((await readFile(join(stateDir, 'agent-id'), 'utf8')).trim()).toBe('agent-1');
    expect(of('hello')[0]).toMatchObject({
      appliedRevision: 0,
      appliedHash: '',
      hostname: 'web-1.test',
    });

    const rs = fixtureRuleSet(Mode.MODE_ENFORCE, 7);
    cp.streams[0]!.write({ ruleSet: rs });
    await until(() => of('ack').length === 1, 'ack');
    expect(of('ack')[0]).toMatchObject({ revision: 7, hash: rs.hash, ok: true, error: '' });
    expect(kernel.dump().some((o) => 'map' in o)).toBe(true);

    // A RuleSet nftables refuses: nack, old rules stay.
    const bad = fixtureRuleSet(Mode.MODE_MONITOR, 8);
    bad.entries.push({ ...bad.entries[3]!, addrFrom: '192.168.1.0', addrTo: '192.168.1.9' });
    cp.streams[0]!.write({ ruleSet: bad });
    await until(() => of('ack').length === 2, 'second ack');
    expect(of('ack')[1]).toMatchObject({ revision: 8, ok: false });
    expect(of('ack')[1]!.error).not.toBe('');
    expect(a.dataplane.applied?.revision).toBe(7);

    kernel.setCounter(`${fixtureChain(0)}_allowed`, 3, 300);
    await until(
      () => of('telemetry').some((t) => t.counters.some((c) => c.ruleId === 'web/ingress/0')),
      'telemetry with the counter',
    );
    const seqs = of('telemetry').map((t) => t.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    const total = of('telemetry')
      .flatMap((t) => t.counters)
      .filter((c) => c.ruleId === 'web/ingress/0')
      .reduce((n, c) => n + c.packets, 0);
    expect(total).toBe(3);

    // A new connection recorded by the kernel goes out as a FlowRecord in a later batch.
    kernel.packetAdd('flows_in4', { concat: ['10.0.0.5', '10.0.9.1', 6, 80, 1] }, 60);
    await until(() => of('telemetry').some((t) => t.flows.length > 0), 'telemetry with a flow');
    expect(of('telemetry').flatMap((t) => t.flows)).toEqual([
      expect.objectContaining({
        direction: Direction.DIRECTION_INGRESS,
        src: '10.0.0.5',
        dst: '10.0.9.1',
        protocol: 6,
        port: 80,
        verdict: Verdict.VERDICT_ALLOWED,
        ruleId: 'web/ingress/0',
        packets: 1,
        bytes: 60,
      }),
    ]);

    const metrics = await (
      await fetch(`http://127.0.0.1:${a.metricsAddress!.port}/metrics`)
    ).text();
    expect(metrics).toContain(
      'bulkhead_rule_packets_total{rule_id="web/ingress/0",direction="ingress",verdict="allowed"} 3',
    );
    expect(metrics).toMatch(/bulkhead_ruleset_revision 7\b/);
    expect(metrics).toMatch(/bulkhead_apply_failures_total 1\b/);
    expect(metrics).toMatch(/bulkhead_control_plane_connected 1\b/);
    expect(metrics).toContain(
      'bulkhead_flows_observed_total{direction="ingress",verdict="allowed"} 1',
    );

    // The control plane drops the stream: the agent comes back and says what it holds.
    cp.streams[0]!.end();
    await until(() => of('hello').length === 2, 'hello after reconnect');
    expect(of('hello')[1]).toMatchObject({ appliedRevision: 7, appliedHash: rs.hash });
    expect(cp.enrolls).toHaveLength(1);
  });

  it('a restart keeps the rules, needs no token, and continues the telemetry seq', async () => {
    const first = agent();
    await first.start();
    await until(() => cp.streams.length === 1, 'stream');
    cp.streams[0]!.write({ ruleSet: fixtureRuleSet(Mode.MODE_ENFORCE, 3) });
    await until(() => of('ack').length === 1 && of('telemetry').length >= 2, 'ack and telemetry');
    await first.stop();
    const lastSeq = Math.max(...of('telemetry').map((t) => t.seq));
    const table = kernel.dump();
    expect(table.some((o) => 'map' in o)).toBe(true); // stop() flushed nothing

    cp.received.length = 0;
    const second = agent(null);
    await second.start();
    expect(kernel.dump()).toEqual(table); // restore found the same rendering in the kernel
    await until(
      () => of('hello').length === 1 && of('telemetry').length >= 1,
      'hello and telemetry',
    );
    expect(of('hello')[0]).toMatchObject({ appliedRevision: 3 });
    expect(of('telemetry')[0]!.seq).toBe(lastSeq + 1);
    expect(cp.enrolls).toHaveLength(1);
  });

  it('refuses to start with neither identity nor token', async () => {
    await expect(agent(null).start()).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });
});
