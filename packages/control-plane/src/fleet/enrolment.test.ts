// Enroll as a token holder would abuse it, over real gRPC against a real control plane: the
// token's expiry, deletion and use count, and the CSR's proof of possession, hold however the
// enrolment path is ordered (issue 9 moved the CSR check first and admits once, in the
// transaction that issues the certificate).
import 'reflect-metadata';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServiceClient, type EnrollResponse } from '@bulkhead/proto';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEntry } from '../access/store.js';
import type { ControlPlane } from '../control-plane.js';
import { makeCsr, makeRsaCsrs, restClient, startTestControlPlane } from '../test-support.js';

describe('enrolment: tokens and proof of possession, from the outside', () => {
  let dir: string;
  let cp: ControlPlane;
  let client: AgentServiceClient;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-enrol-'));
    cp = await startTestControlPlane(dir);
    client = new AgentServiceClient(
      `127.0.0.1:${cp.grpcPort}`,
      credentials.createSsl(Buffer.from(cp.caPem)),
    );
  });
  afterEach(async () => {
    client.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const api = (method: string, path: string, body?: unknown) => restClient(cp)(method, path, body);
  const newToken = async (body: Record<string, unknown>) =>
    (await api('POST', '/v1/enrollment-tokens', body)).json as {
      id: string;
      token: string;
      expiresAt: string;
    };
  const enroll = (token: string, hostname: string, address: string, csrPem: string) =>
    new Promise<EnrollResponse>((resolve, reject) =>
      client.enroll(
        {
          bootstrapToken: token,
          hostname,
          addresses: [address],
          labels: {},
          csrPem,
          agentVersion: 'attacker',
        },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => {
        throw new Error('enrolment was accepted');
      },
      (e: ServiceError) => e,
    );
  const audit = async (action: string) =>
    ((await api('GET', '/v1/audit?limit=1000')).json as AuditEntry[]).filter(
      (e) => e.action === action,
    );
  const workloadNames = async () =>
    ((await api('GET', '/v1/workloads')).json as { name: string }[]).map((w) => w.name);

  it('concurrent enrolments never pass the token use count, even while their CSRs are checked', async () => {
    const { token } = await newToken({ maxUses: 2 });
    const csrs = await makeRsaCsrs(Array.from({ length: 6 }, (_, i) => `h-${i}`));
    const results = await Promise.allSettled(
      csrs.map((csr, i) => enroll(token, `h-${i}`, `10.0.0.${i + 1}`, csr)),
    );
    const ok = results.filter((r) => r.status === 'fulfilled');
    expect(ok).toHaveLength(2);
    for (const r of results) {
      if (r.status === 'rejected') expect(r.reason.code).toBe(status.UNAUTHENTICATED);
    }
    expect(await workloadNames()).toHaveLength(2);
    expect(await audit('agent.enroll')).toHaveLength(2);
    const [listed] = (await api('GET', '/v1/enrollment-tokens')).json;
    expect(listed).toMatchObject({ maxUses: 2, uses: 2 });
  }, 30_000);

  it("refuses a CSR whose signature is not its key holder's, audits it, and keeps the token's use", async () => {
    const { token } = await newToken({ maxUses: 1 });
    const { csrPem } = await makeCsr('host-a');
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.indexOf('host-a') + 5] = 'b'.charCodeAt(0); // the signed request now names host-b
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;

    const err = await refusal(enroll(token, 'web-1', '10.0.0.9', forged));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toContain('csr signature does not verify');
    const [entry] = await audit('agent.enroll.refused');
    expect(entry).toMatchObject({
      target: 'web-1',
      after: { reason: 'csr signature does not verify' },
    });
    expect(await workloadNames()).toEqual([]);

    // The refused attempt used nothing: the one use is still there for the real host.
    const res = await enroll(token, 'web-1', '10.0.0.9', csrPem);
    expect(res.workloadId).toBe('web-1');
  });

  it('refuses a deleted token and an expired one, before any CSR work, without an audit of the request', async () => {
    const deleted = await newToken({});
    expect((await api('DELETE', `/v1/enrollment-tokens/${deleted.id}`)).status).toBe(204);
    const { csrPem } = await makeCsr('web-1');
    expect((await refusal(enroll(deleted.token, 'web-1', '10.0.0.9', csrPem))).code).toBe(
      status.UNAUTHENTICATED,
    );

    const expiring = await newToken({ ttlSeconds: 1 });
    // Expiry is the control plane's clock passing expiresAt: wait until it has.
    await new Promise((r) => setTimeout(r, Date.parse(expiring.expiresAt) - Date.now() + 50));
    expect((await refusal(enroll(expiring.token, 'web-1', '10.0.0.9', 'not a csr'))).code).toBe(
      status.UNAUTHENTICATED,
    );
    expect(await audit('agent.enroll.refused')).toEqual([]);
    expect(await workloadNames()).toEqual([]);
  });
});
