import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApi } from './api.js';
import { createRestHarness, type RestHarness } from './rest.test-util.js';
import { silentLog } from './test-support.js';

describe('web console at /ui', () => {
  let h: RestHarness;
  let dir: string;
  let app: FastifyInstance;
  let unbuilt: FastifyInstance;

  beforeAll(async () => {
    h = await createRestHarness([['web-1', '10.0.1.1', { app: 'web' }]]);
    dir = mkdtempSync(join(tmpdir(), 'bh-console-'));
    mkdirSync(join(dir, 'assets'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>console</title>');
    writeFileSync(join(dir, 'assets', 'index-abc.js'), 'export {};');
    app = await createApi({ domains: h.domains, log: silentLog, consoleDir: dir });
    unbuilt = await createApi({
      domains: h.domains,
      log: silentLog,
      consoleDir: join(dir, 'nothing'),
    });
  });
  afterAll(async () => {
    await app.close();
    await unbuilt.close();
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the built files without a token, under a CSP that allows no inline script', async () => {
    expect((await app.inject('/ui')).headers.location).toBe('/ui/');
    const page = await app.inject('/ui/');
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('<title>console</title>');
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    expect(page.headers['cache-control']).toBe('no-cache');
    const js = await app.inject('/ui/assets/index-abc.js');
    expect(js.statusCode).toBe(200);
    expect(js.headers['cache-control']).toContain('immutable');
    expect((await app.inject('/ui/assets/none.js')).statusCode).toBe(404);
  });

  it('keeps the API behind its token, whatever the path says', async () => {
    expect((await app.inject('/v1/agents')).statusCode).toBe(401);
    for (const url of ['/ui/../v1/agents', '/ui/%2e%2e/v1/agents', '/ui/..%2fv1/agents']) {
      const res = await app.inject(url);
      expect(res.statusCode, url).not.toBe(200);
      expect(res.body, url).not.toContain('agent-web-1');
    }
    const withToken = await app.inject({
      url: '/v1/agents',
      headers: { authorization: `Bearer ${h.admin}` },
    });
    expect(withToken.json()).toMatchObject([{ id: 'agent-web-1' }]);
  });

  it('says the console is not built, in the one error shape, while the API keeps working', async () => {
    const res = await unbuilt.inject('/ui/');
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toMatchObject({ code: 'NOT_FOUND' });
    expect(res.json().error.message).toMatch(/web console is not built .*npm run build/);
    expect((await unbuilt.inject('/healthz')).statusCode).toBe(200);
  });
});
