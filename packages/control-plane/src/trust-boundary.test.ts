// Issue 10, points 1 and 2, tried as an attacker would: a real control plane on 127.0.0.1:0,
// real gRPC with real certificates, the REST API an admin uses. Who holds an enrolment token or
// a compromised host must not take over another workload nor widen anyone's access.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServiceClient, type EnrollRequest, type EnrollResponse } from '@bulkhead/proto';
import { type ChannelCredentials, credentials, type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEntry } from './access/store.js';
import type { ControlPlane } from './control-plane.js';
import { SyncSession } from './sync-session.test-util.js';
import { makeCsr, restClient, startTestControlPlane } from './test-support.js';

describe('trust boundary: enrolment and address claims', () => {
  let dir: string;
  let cp: ControlPlane;
  const clients: AgentServiceClient[] = [];
  const sessions: SyncSession[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-trust-'));
    cp = await startTestControlPlane(dir);
  });
  afterEach(async () => {
    for (const s of sessions.splice(0)) s.stream.cancel();
    for (const c of clients.splice(0)) c.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // A new control plane each test: the caller is made per call.
  const api = (method: string, path: string, body?: unknown) => restClient(cp)(method, path, body);

  function client(creds = credentials.createSsl(Buffer.from(cp.caPem))): AgentServiceClient {
    const c = new AgentServiceClient(`127.0.0.1:${cp.grpcPort}`, creds);
    clients.push(c);
    return c;
  }

  async function newToken(body: Record<string, unknown> = {}): Promise<string> {
    const res = await api('POST', '/v1/enrollment-tokens', body);
    expect(res.status, JSON.stringify(res.json)).toBe(201);
    return res.json.token;
  }

  /** An Enroll as any holder of a token can send it. */
  async function enroll(
    token: string,
    req: Partial<EnrollRequest> & { hostname: string },
  ): Promise<{ res: EnrollResponse; creds: ChannelCredentials }> {
    const { csrPem, keyPem } = await makeCsr(req.hostname);
    const res = await new Promise<EnrollResponse>((resolve, reject) =>
      client().enroll(
        {
          bootstrapToken: token,
          addresses: [],
          labels: {},
          csrPem,
          agentVersion: 'attacker',
          ...req,
        },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    const creds = credentials.createSsl(
      Buffer.from(cp.caPem),
      Buffer.from(keyPem),
      Buffer.from(res.certificatePem),
    );
    return { res, creds };
  }

  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => {
        throw new Error('enrolment was accepted');
      },
      (e: ServiceError) => e,
    );

  function sync(creds: ChannelCredentials): SyncSession {
    const s = new SyncSession(client(creds).sync());
    sessions.push(s);
    return s;
  }

  function hello(s: SyncSession, addresses: string[]) {
    s.send({
      hello: {
        appliedRevision: 0,
        appliedHash: '',
        hostname: '',
        addresses,
        agentVersion: 't',
        packedRanges: true,
        telemetryAcks: false,
      },
    });
  }

  const workload = async (name: string) => (await api('GET', `/v1/workloads/${name}`)).json;
  const ruleSet = async (name: string) => (await api('GET', `/v1/rulesets/${name}`)).json;
  const audit = async (action: string) =>
    ((await api('GET', '/v1/audit?limit=1000')).json as AuditEntry[]).filter(
      (e) => e.action === action,
    );

  /** db-1 (the victim, enforcing), api-1 (a third workload whose policy allows db and mon). */
  async function fleet() {
    const victim = await enroll(await newToken({ labels: { app: 'db' } }), {
      hostname: 'db-1',
      addresses: ['10.0.0.2'],
    });
    await enroll(await newToken({ labels: { app: 'api' } }), {
      hostname: 'api-1',
      addresses: ['10.0.0.3'],
    });
    await api('PATCH', '/v1/workloads/db-1?provision=true', { mode: { ingress: 'enforce' } });
    await api('PUT', '/v1/policies/api', {
      scope: { matchLabels: { app: 'api' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'db' } } }],
          services: [{ protocol: 'tcp', port: 5432 }],
        },
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'mon' } } }],
          services: [{ protocol: 'tcp', port: 9100 }],
        },
      ],
    });
    expect((await api('POST', '/v1/provision', { note: 'trust' })).status).toBe(200);
    const s = sync(victim.creds);
    await s.barrier();
    return { victim, victimStream: s };
  }

  it('refuses a takeover with a valid unscoped token, audits it, and leaves the victim as it was', async () => {
    const { victim, victimStream } = await fleet();
    const before = await workload('db-1');
    const { id: tokenId, token } = (
      await api('POST', '/v1/enrollment-tokens', { labels: { env: 'prod' } })
    ).json;

    const err = await refusal(
      enroll(token, { hostname: 'DB-1', addresses: ['10.0.0.66'], labels: { app: 'evil' } }),
    );
    expect(err.code).toBe(status.ALREADY_EXISTS);
    expect(err.details).toContain('workload db-1 already exists');

    const [entry] = await audit('agent.enroll.refused');
    expect(entry).toMatchObject({
      actor: expect.stringMatching(/^enrollment-token:/),
      target: 'db-1',
      after: { tokenId, hostname: 'DB-1', reason: expect.stringContaining('db-1') },
    });
    const after = await workload('db-1');
    expect(after).toEqual(before);
    expect(after.mode).toEqual({ ingress: 'enforce', egress: 'monitor' });
    const agents = (await api('GET', '/v1/agents')).json as { id: string; revoked: boolean }[];
    expect(agents.find((a) => a.id === victim.res.agentId)).toMatchObject({
      revoked: false,
      connected: true,
    });
    // The victim's stream is still open and answered.
    expect((await victimStream.barrier()).ruleSet!.workloadId).toBe('db-1');
    // The refused attempt did not spend the token: a new host still enrols with it.
    await enroll(token, { hostname: 'web-1', addresses: ['10.0.0.4'] });
  });

  it('a token made for a workload re-enrols only that workload, once, and says so in the audit', async () => {
    const { victim, victimStream } = await fleet();
    const token = await newToken({ workload: 'db-1' });
    const wrong = await refusal(enroll(token, { hostname: 'api-1', addresses: ['10.0.0.3'] }));
    expect(wrong.code).toBe(status.PERMISSION_DENIED);
    expect(wrong.details).toContain('hostname: this token may only enrol workload db-1');

    const again = await enroll(token, { hostname: 'db-1', addresses: ['10.0.0.2'] });
    expect((await victimStream.error).code).toBe(status.UNAUTHENTICATED);
    const [entry] = await audit('agent.enroll');
    expect(entry).toMatchObject({
      target: again.res.agentId,
      before: { name: 'db-1' },
      after: { replaced: [victim.res.agentId] },
    });
    // Used up: a second re-enrolment needs a new admin act.
    const twice = await refusal(enroll(token, { hostname: 'db-1', addresses: ['10.0.0.2'] }));
    expect(twice.code).toBe(status.UNAUTHENTICATED);
  });

  it('labels and mode asked at enrolment are the initial ones only: a re-enrolment changes neither', async () => {
    await fleet();
    const before = await workload('db-1');
    expect(before).toMatchObject({ labels: { app: 'db' }, mode: { ingress: 'enforce' } });
    const third = await ruleSet('api-1');
    expect(JSON.stringify(third)).toContain('10.0.0.2');
    const token = await newToken({ workload: 'db-1', labels: { app: 'api' }, mode: {} });
    await enroll(token, { hostname: 'db-1', addresses: ['10.0.0.2'], labels: { app: 'api' } });
    const after = await workload('db-1');
    expect(after.labels).toEqual({ app: 'db' });
    expect(after.mode).toEqual(before.mode);
    // Nor what its peers get: api-1 still takes db-1 in as app=db.
    expect(await ruleSet('api-1')).toEqual(third);
  });

  it('release revokes the agents and closes their streams; the next enrolment takes the workload', async () => {
    const { victim, victimStream } = await fleet();
    expect(
      (await api('POST', '/v1/workloads/db-1/release', { note: '' })).json.error,
    ).toMatchObject({ code: 'VALIDATION_FAILED', details: [{ path: 'note' }] });
    const released = await api('POST', '/v1/workloads/db-1/release', { note: 'reinstalled' });
    expect(released.status).toBe(200);
    expect(released.json.released).toMatchObject({ actor: 'initial-admin', note: 'reinstalled' });
    expect((await victimStream.error).code).toBe(status.UNAUTHENTICATED);
    const [entry] = await audit('workload.release');
    expect(entry).toMatchObject({ target: 'db-1', after: { revokedAgents: [victim.res.agentId] } });

    const taken = await enroll(await newToken({ labels: { app: 'db' } }), {
      hostname: 'db-1',
      addresses: ['10.0.0.2'],
    });
    expect(taken.res.workloadId).toBe('db-1');
    expect((await workload('db-1')).released).toBeNull();
    // Taken: the workload is bound again.
    const err = await refusal(enroll(await newToken(), { hostname: 'db-1' }));
    expect(err.code).toBe(status.ALREADY_EXISTS);
    expect((await api('POST', '/v1/workloads/nope/release', { note: 'x' })).status).toBe(404);
  });

  it("refuses an enrolment outside the token's scope, naming the field, and audits it", async () => {
    const token = await newToken({
      labels: { role: 'web' },
      scope: {
        names: ['web-*'],
        labels: { app: ['web', 'shop'], env: ['*'] },
        cidrs: ['10.1.0.0/24'],
      },
    });
    const cases: [Partial<EnrollRequest> & { hostname: string }, string][] = [
      [{ hostname: 'db-9', addresses: ['10.1.0.5'] }, 'hostname'],
      [{ hostname: 'web-1', addresses: ['10.1.0.5'], labels: { app: 'db' } }, 'labels.app'],
      [{ hostname: 'web-1', addresses: ['10.1.0.5'], labels: { tier: 'x' } }, 'labels.tier'],
      [{ hostname: 'web-1', addresses: ['10.1.0.5', '10.2.0.1'] }, 'addresses[1]'],
    ];
    for (const [req, field] of cases) {
      const err = await refusal(enroll(token, req));
      expect(err.code, field).toBe(status.PERMISSION_DENIED);
      expect(err.details).toContain(`(${field}: `);
    }
    expect(await audit('agent.enroll.refused')).toHaveLength(cases.length);
    expect((await api('GET', '/v1/workloads')).json).toEqual([]);

    // Inside the scope (any env; the token's own role label wins over the request's).
    const ok = await enroll(token, {
      hostname: 'Web-7',
      addresses: ['10.1.0.5'],
      labels: { app: 'shop', env: 'anything', role: 'db' },
    });
    expect(ok.res.workloadId).toBe('web-7');
    expect(await workload('web-7')).toMatchObject({
      labels: { app: 'shop', env: 'anything', role: 'web' },
      addresses: ['10.1.0.5'],
      addressRanges: ['10.1.0.0/24'],
      pending: null,
    });
    const bad = await api('POST', '/v1/enrollment-tokens', {
      scope: { names: ['Web_*'], cidrs: ['10.0.0.1/8'], labels: { 'not ok': ['x'] } },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.error.details.map((d: { path: string }) => d.path).sort()).toEqual(
      ['scope.cidrs[0]', 'scope.labels.not ok[0]', 'scope.names[0]'].sort(),
    );
  });

  it("an unscoped token never claims another workload's address at enrolment", async () => {
    await fleet();
    const err = await refusal(
      enroll(await newToken(), { hostname: 'evil-1', addresses: ['10.0.0.9', '10.0.0.2'] }),
    );
    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(err.details).toContain('addresses[1]: 10.0.0.2 belongs to workload db-1');
  });

  it("an enrolled agent claiming the victim's address is refused; its peers' rule sets do not change", async () => {
    await fleet();
    const evil = await enroll(await newToken({ labels: { app: 'mon' } }), {
      hostname: 'evil-1',
      addresses: ['10.0.0.50'],
    });
    const s = sync(evil.creds);
    await s.barrier();
    const third = await ruleSet('api-1');
    expect(JSON.stringify(third)).toContain('10.0.0.50');

    hello(s, ['10.0.0.50', '10.0.0.2']);
    await s.barrier();
    expect(await ruleSet('api-1')).toEqual(third);
    expect((await workload('evil-1')).addresses).toEqual(['10.0.0.50']);
    const events = (await api('GET', '/v1/events?workload=evil-1')).json;
    expect(events[0]).toMatchObject({
      code: 'ADDRESS_CLAIM_REFUSED',
      agentId: 'control-plane',
      attributes: { agentId: evil.res.agentId },
    });
    expect(events[0].attributes.details).toContain('10.0.0.2 belongs to workload db-1');
    expect(await audit('workload.addresses.refused')).toHaveLength(1);
  });

  it('a claim outside the ranges waits as pending; approved via REST it is compiled, denied it is not', async () => {
    await fleet();
    const mon = await enroll(await newToken({ labels: { app: 'mon' } }), {
      hostname: 'mon-1',
      addresses: ['10.0.0.60'],
    });
    const s = sync(mon.creds);
    await s.barrier();
    const third = await ruleSet('api-1');

    hello(s, ['10.0.0.60', '192.0.2.7']);
    await s.barrier();
    expect(await ruleSet('api-1')).toEqual(third);
    const w = await workload('mon-1');
    expect(w.addresses).toEqual(['10.0.0.60']);
    expect(w.pending).toMatchObject({
      addresses: ['10.0.0.60', '192.0.2.7'],
      agentId: mon.res.agentId,
    });
    const pending = (await api('GET', '/v1/workloads?pending=true')).json;
    expect(pending.map((x: { name: string }) => x.name)).toEqual(['mon-1']);
    expect((await api('GET', '/v1/events?workload=mon-1')).json[0]).toMatchObject({
      code: 'ADDRESSES_PENDING',
      attributes: { addresses: '10.0.0.60,192.0.2.7' },
    });
    // The same claim again (a reconnect) records nothing new.
    hello(s, ['192.0.2.7', '10.0.0.60']);
    await s.barrier();
    expect(await audit('workload.addresses.pending')).toHaveLength(1);

    const approved = await api('POST', '/v1/workloads/mon-1/addresses/approve');
    expect(approved.status).toBe(200);
    expect(approved.json).toMatchObject({ addresses: ['10.0.0.60', '192.0.2.7'], pending: null });
    expect(JSON.stringify(await ruleSet('api-1'))).toContain('192.0.2.7');
    expect(await audit('workload.addresses.approve')).toHaveLength(1);
    expect((await api('POST', '/v1/workloads/mon-1/addresses/approve')).status).toBe(409);

    // A fresh stream: the approval may have pushed a RuleSet that would answer a barrier.
    const s2 = sync(mon.creds);
    hello(s2, ['10.0.0.60', '198.51.100.1']);
    await s2.barrier();
    const denied = await api('POST', '/v1/workloads/mon-1/addresses/deny');
    expect(denied.json).toMatchObject({ addresses: ['10.0.0.60', '192.0.2.7'], pending: null });
    expect(JSON.stringify(await ruleSet('api-1'))).not.toContain('198.51.100.1');
    expect(await audit('workload.addresses.deny')).toHaveLength(1);
  });

  it('approval re-checks ownership: an address another workload took meanwhile is refused', async () => {
    await fleet();
    const mon = await enroll(await newToken(), { hostname: 'mon-1', addresses: ['10.0.0.60'] });
    const s = sync(mon.creds);
    await s.barrier();
    hello(s, ['10.0.0.61']);
    await s.barrier();
    await enroll(await newToken(), { hostname: 'late-1', addresses: ['10.0.0.61'] });
    const res = await api('POST', '/v1/workloads/mon-1/addresses/approve');
    expect(res.status).toBe(409);
    expect(res.json.error.details).toEqual([
      { path: 'addresses[0]', message: '10.0.0.61 belongs to workload late-1' },
    ]);
    expect((await workload('mon-1')).addresses).toEqual(['10.0.0.60']);
  });

  it('claims inside ranges an admin set apply at once; bad ranges are refused naming the entry', async () => {
    await fleet();
    const mon = await enroll(await newToken(), { hostname: 'mon-1', addresses: ['10.0.0.60'] });
    const bad = await api('PATCH', '/v1/workloads/mon-1', { addressRanges: ['10.0.0.0/24', 'x'] });
    expect(bad.status).toBe(400);
    expect(bad.json.error.details[0].path).toBe('addressRanges[1]');
    const ok = await api('PATCH', '/v1/workloads/mon-1', { addressRanges: ['10.0.0.0/24'] });
    expect(ok.json.addressRanges).toEqual(['10.0.0.0/24']);
    const s = sync(mon.creds);
    await s.barrier();
    hello(s, ['10.0.0.70']);
    await s.barrier();
    expect(await workload('mon-1')).toMatchObject({ addresses: ['10.0.0.70'], pending: null });
    expect(await audit('workload.addresses')).toHaveLength(1);
  });

  it('50,000 addresses are refused at enrolment and in Hello', async () => {
    await fleet();
    const many = Array.from(
      { length: 50_000 },
      (_, i) => `10.${(i >> 16) + 100}.${(i >> 8) & 255}.${i & 255}`,
    );
    const err = await refusal(enroll(await newToken(), { hostname: 'big-1', addresses: many }));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toContain('addresses: at most 64 addresses per workload (50000 claimed)');
    expect(await audit('agent.enroll.refused')).toHaveLength(1);

    const mon = await enroll(await newToken(), { hostname: 'mon-1', addresses: ['10.0.0.60'] });
    await api('PATCH', '/v1/workloads/mon-1', { addressRanges: ['0.0.0.0/0'] });
    const third = await ruleSet('api-1');
    const s = sync(mon.creds);
    await s.barrier();
    hello(s, many);
    await s.barrier();
    expect((await workload('mon-1')).addresses).toEqual(['10.0.0.60']);
    expect(await ruleSet('api-1')).toEqual(third);
    expect((await api('GET', '/v1/events?workload=mon-1')).json[0]).toMatchObject({
      code: 'ADDRESS_CLAIM_REFUSED',
      attributes: { reason: 'too many addresses' },
    });
  });
});
