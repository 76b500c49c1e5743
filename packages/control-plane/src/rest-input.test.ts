// The REST edge under hostile input: one error shape everywhere (also for what fastify answers
// itself), strict bodies (no coercion, unknown fields named), the public paths with a query.
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from './api.js';
import { createDomains } from './domains.js';
import { createStreamRegistry } from './fleet/streams.js';
import { createPki } from './pki.js';
import { createSqliteStores, type Stores } from './store/index.js';
import { silentLog } from './test-support.js';

describe('REST input edges', () => {
  let dir: string;
  let store: Stores;
  let app: FastifyInstance;
  let auth: { authorization: string };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-edge-'));
    store = createSqliteStores({ path: join(dir, 'bulkhead.db') });
    const pki = await createPki({ dir: join(dir, 'ca') });
    const domains = createDomains({
      stores: store,
      pki,
      streams: createStreamRegistry(),
      log: silentLog,
    });
    auth = { authorization: `Bearer ${domains.access.bootstrapAdminToken()}` };
    app = await createApi({ domains, log: silentLog });
  });
  afterEach(async () => {
    await app.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const raw = (method: 'POST' | 'PUT' | 'PATCH', url: string, payload: string) =>
    app.inject({ method, url, payload, headers: { ...auth, 'content-type': 'application/json' } });
  const errorOf = (res: { statusCode: number; json(): unknown }) => [res.statusCode, res.json()];

  it('answers a too long URL with 414 in the one error shape, before auth', async () => {
    const res = await app.inject({ method: 'GET', url: `/v1/policies/${'a'.repeat(5000)}` });
    expect(errorOf(res)).toEqual([
      414,
      { error: { code: 'URI_TOO_LONG', message: expect.any(String), details: [] } },
    ]);
  });

  const shape = (code: string) => ({
    error: { code, message: expect.any(String), details: expect.any(Array) },
  });
  it.each([
    ['GET', '/v1/nothing-here', undefined, undefined, 404, 'NOT_FOUND'],
    ['PUT', '/v1/draft', 'application/json', '{}', 405, 'METHOD_NOT_ALLOWED'],
    ['PATCH', '/v1/revisions/1', 'application/json', '{}', 405, 'METHOD_NOT_ALLOWED'],
    ['POST', '/v1/provision', 'text/plain', 'note', 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['PUT', '/v1/services/s', 'application/xml', '<s/>', 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['POST', '/v1/provision', 'application/json', '{"note": ', 400, 'VALIDATION_FAILED'],
  ] as const)(
    '%s %s (%s %s) is a %d in the one error shape',
    async (method, url, type, payload, status, code) => {
      const res = await app.inject({
        method,
        url,
        payload,
        headers: { ...auth, ...(type && { 'content-type': type }) },
      });
      expect(errorOf(res)).toEqual([status, shape(code)]);
    },
  );

  it('names the allowed methods of a 405 in its Allow header', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/workloads/w', headers: auth });
    expect(res.statusCode).toBe(405);
    expect(res.headers.allow).toBe('DELETE, GET, HEAD, PATCH');
  });

  it('answers a body over 1 MiB with 413 PAYLOAD_TOO_LARGE', async () => {
    const res = await raw('POST', '/v1/provision', JSON.stringify({ note: 'x'.repeat(1 << 20) }));
    expect(errorOf(res)).toEqual([
      413,
      { error: { code: 'PAYLOAD_TOO_LARGE', message: expect.any(String), details: [] } },
    ]);
  });

  it.each([
    ['{"labels":{"__proto__":{"admin":"yes"}}}', 'labels.__proto__'],
    ['{"labels":{"constructor":{"prototype":{}}}}', 'labels.constructor'],
    ['{"mode":{"ingress":"monitor"},"__proto__":1}', '__proto__'],
  ])('refuses %s naming %s', async (body, path) => {
    await app.inject({
      method: 'PUT',
      url: '/v1/workloads/w',
      headers: auth,
      payload: { addresses: [] },
    });
    const res = await raw('PATCH', '/v1/workloads/w', body);
    expect(errorOf(res)).toEqual([
      400,
      {
        error: {
          code: 'VALIDATION_FAILED',
          message: 'invalid body',
          details: [{ path, message: expect.stringContaining('not allowed') }],
        },
      },
    ]);
  });

  it('serves /healthz and /metrics with a query string without a token', async () => {
    expect((await app.inject({ method: 'GET', url: '/healthz?x=1' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/metrics?x=1' })).statusCode).toBe(200);
    // ...but a query does not open other paths.
    expect((await app.inject({ method: 'GET', url: '/v1/policies?/healthz' })).statusCode).toBe(
      401,
    );
  });

  it.each([
    ['PATCH', '/v1/workloads/w', { confirm: 'yes' }, 'confirm'],
    ['POST', '/v1/provision', { note: 'n', confirm: 'true' }, 'confirm'],
    ['POST', '/v1/provision', { note: 'n', force: true }, 'force'],
    ['POST', '/v1/enrollment-tokens', { maxUses: '5' }, 'maxUses'],
    ['POST', '/v1/enrollment-tokens', { ttlSeconds: 60, owner: 'x' }, 'owner'],
  ] as const)(
    '%s %s refuses %j naming %s (no coercion, no unknown fields)',
    async (method, url, body, path) => {
      await app.inject({
        method: 'PUT',
        url: '/v1/workloads/w',
        headers: auth,
        payload: { addresses: [] },
      });
      const res = await app.inject({ method, url, headers: auth, payload: body });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.details.map((d: { path: string }) => d.path)).toContain(path);
    },
  );

  it('keeps coercing the query string, which is text by nature', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/events?limit=5', headers: auth });
    expect(res.statusCode).toBe(200);
  });

  it("answers fastify's own errors in our shape over a real socket (malformed request line)", async () => {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port, path: `/v1/services/${'s'.repeat(5000)}`, method: 'GET' },
        (r) => {
          let body = '';
          r.on('data', (c) => (body += c));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(res.status).toBe(414);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'URI_TOO_LONG' } });
  });
});
