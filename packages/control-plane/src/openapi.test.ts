// The REST contract as generated clients see it: the OpenAPI document is valid, every route
// declares a success and an error answer, and real answers validate against what their route
// declares (closed objects, so an undocumented field fails) and arrive whole.
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRestHarness, type RestHarness } from './rest.test-util.js';

interface Operation {
  responses: Record<string, { content?: Record<string, { schema: object }> }>;
}
type OpenApi = { openapi: string; paths: Record<string, Record<string, Operation>> };

const METHODS = ['get', 'put', 'post', 'patch', 'delete'];

describe('the OpenAPI document', () => {
  let h: RestHarness;
  let doc: OpenApi;
  const ajv = new Ajv2020({ strict: false, allErrors: true });

  beforeAll(async () => {
    h = await createRestHarness([
      ['web', '10.0.0.11', { app: 'web' }],
      ['db', '10.0.0.20', { app: 'db' }],
    ]);
    const ok = async (res: Promise<{ statusCode: number; body: string }>) => {
      const r = await res;
      expect(r.statusCode, r.body).toBeLessThan(300);
    };
    await ok(h.call('PUT', '/v1/services/pg', { ports: [{ protocol: 'tcp', port: 5432 }] }));
    await ok(h.call('PUT', '/v1/ip-lists/lic', { cidrs: ['192.0.2.0/24'] }));
    await ok(
      h.call('PUT', '/v1/policies/db', {
        scope: { matchLabels: { app: 'db' } },
        ingress: [
          {
            action: 'allow',
            peers: [{ selector: { matchLabels: { app: 'web' } } }],
            services: ['pg'],
          },
        ],
      }),
    );
    await ok(h.call('POST', '/v1/provision', { note: 'first' }));
    await ok(h.call('POST', '/v1/enrollment-tokens', { labels: { app: 'x' }, maxUses: 2 }));
    h.observe('db', [{ direction: 'ingress', src: '10.0.0.11', dst: '10.0.0.20', port: 5432 }]);
    h.observe('db', [{ direction: 'ingress', src: '10.0.0.99', dst: '10.0.0.20', port: 22 }]);
    doc = (await h.app.inject({ method: 'GET', url: '/docs/json' })).json();
  });
  afterAll(() => h.close());

  const operations = () =>
    Object.entries(doc.paths).flatMap(([path, item]) =>
      METHODS.filter((m) => item[m]).map((m) => ({ path, method: m, op: item[m]! })),
    );

  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await new Validator().validate(doc as never);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(doc.openapi).toBe('3.1.0');
  });

  it('declares a 2xx and an error answer with a schema for every route', () => {
    const ops = operations();
    expect(ops.length).toBeGreaterThan(40);
    const missing = ops.flatMap(({ path, method, op }) => {
      const codes = Object.keys(op.responses);
      const success = codes.filter((c) => /^2/.test(c));
      const gaps: string[] = [];
      // 204 has no body; every other success carries a JSON schema.
      if (success.length === 0) gaps.push('no 2xx');
      for (const c of success.filter((c) => c !== '204')) {
        if (!op.responses[c]!.content?.['application/json']?.schema) gaps.push(`${c} no schema`);
      }
      for (const c of ['4XX', '5XX']) {
        if (!op.responses[c]?.content?.['application/json']?.schema) gaps.push(`no ${c} schema`);
      }
      return gaps.map((g) => `${method.toUpperCase()} ${path}: ${g}`);
    });
    expect(missing).toEqual([]);
  });

  /** The schema `method path` declares for `status` (its exact code, else `4XX`/`5XX`). */
  const declared = (method: string, path: string, status: number) => {
    const responses = doc.paths[path]![method.toLowerCase()]!.responses;
    const r = responses[String(status)] ?? responses[`${String(status)[0]}XX`];
    return r?.content?.['application/json']?.schema;
  };

  it.each([
    ['GET', '/v1/workloads', '/v1/workloads', undefined],
    ['GET', '/v1/workloads/db', '/v1/workloads/{name}', undefined],
    ['PATCH', '/v1/workloads/web', '/v1/workloads/{name}', { labels: { app: 'web', env: 'p' } }],
    ['GET', '/v1/policies', '/v1/policies', undefined],
    ['GET', '/v1/services/pg', '/v1/services/{name}', undefined],
    ['GET', '/v1/ip-lists/lic', '/v1/ip-lists/{name}', undefined],
    ['GET', '/v1/draft', '/v1/draft', undefined],
    ['POST', '/v1/impact', '/v1/impact', {}],
    ['GET', '/v1/revisions', '/v1/revisions', undefined],
    ['GET', '/v1/revisions/1', '/v1/revisions/{n}', undefined],
    ['GET', '/v1/revisions/1/diff', '/v1/revisions/{n}/diff', undefined],
    ['GET', '/v1/rulesets/db', '/v1/rulesets/{workload}', undefined],
    ['GET', '/v1/agents', '/v1/agents', undefined],
    ['GET', '/v1/counters', '/v1/counters', undefined],
    ['GET', '/v1/enrollment-tokens', '/v1/enrollment-tokens', undefined],
    ['GET', '/v1/flows', '/v1/flows', undefined],
    ['GET', '/v1/map', '/v1/map', undefined],
    ['POST', '/v1/recommendations', '/v1/recommendations', { workload: 'db' }],
    ['GET', '/v1/events', '/v1/events', undefined],
    ['POST', '/v1/explain', '/v1/explain', { from: 'web', to: 'db', protocol: 'tcp', port: 5432 }],
    ['GET', '/v1/hygiene', '/v1/hygiene', undefined],
    ['GET', '/v1/tokens', '/v1/tokens', undefined],
    ['GET', '/v1/audit', '/v1/audit', undefined],
    ['GET', '/v1/workloads/nobody', '/v1/workloads/{name}', undefined],
    ['POST', '/v1/provision', '/v1/provision', { note: '' }],
  ] as const)('%s %s answers what its route declares', async (method, url, path, body) => {
    const res = await h.call(method, url, body);
    const schema = declared(method, path, res.statusCode);
    expect(schema, `${res.statusCode} ${res.body}`).toBeDefined();
    const validate = ajv.compile(schema!);
    expect(validate(res.json()) ? [] : validate.errors).toEqual([]);
  });

  it('sends answers whole: no field dropped by the response schema', async () => {
    // The services' own values, as JSON, against what went over HTTP.
    const asJson = (v: unknown) => JSON.parse(JSON.stringify(v));
    const cases: [string, unknown][] = [
      ['/v1/workloads/db', h.domains.policy.getWorkload('db')],
      ['/v1/agents', h.domains.fleet.listAgents()],
      ['/v1/revisions/1', h.domains.revisions.getRevision(1)],
      ['/v1/events', h.domains.visibility.listEvents({})],
    ];
    for (const [url, direct] of cases) {
      expect((await h.call('GET', url)).json(), url).toEqual(asJson(direct));
    }
  });

  it('documents the error shape once for all routes, with the impact of a 409', () => {
    const schema = declared('post', '/v1/provision', 409) as {
      properties: { error: { properties: Record<string, unknown>; required: string[] } };
    };
    expect(Object.keys(schema.properties.error.properties)).toEqual([
      'code',
      'message',
      'details',
      'impact',
    ]);
    expect(schema.properties.error.required).toEqual(['code', 'message', 'details']);
  });
});
