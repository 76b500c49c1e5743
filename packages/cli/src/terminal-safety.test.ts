// Issue 10 point 4: strings from agents and admins must never reach the terminal raw. A fake
// API answers every command with hostile strings in every field; table and text output must
// show them escaped, `-o json` and `-o yaml` must parse back to exactly what was served.
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import type { Answer } from './fake-api.js';
import { escapeControls, render } from './output.js';
import { useCliFixture } from './test-util.js';

const NOW = new Date('2026-03-10T12:00:00.000Z');
const fx = useCliFixture({ prefix: 'bulkhead-cli-escape-', now: NOW });

/**
 * OSC 52 (write the clipboard), clear screen, colour, a one-byte C1 CSI, DCS and ST, carriage
 * return and backspace (overwrite), DEL, a bidi override and an isolate, and a line break.
 */
const EVIL =
  '\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[31m\x9b1;1H\x90q\x9c\r\b\x7f\u202etxt.exe\u2066\u2069\nforged';
/** Anything that must not be written raw (tab and newline aside). */
const RAW_CLASS = '[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]';
const RAW = new RegExp(RAW_CLASS);

// Fields the CLI dispatches on stay valid, so that the text paths behind them run.
const KEEP = new Set(['kind', 'change']);
const LABEL_MAPS = new Set(['labels', 'matchLabels']);

/** Every string (and every label key) with `evil` appended. */
function hostile<T>(value: T, evil = EVIL, key = ''): T {
  if (typeof value === 'string') return (KEEP.has(key) ? value : `${value}${evil}`) as T;
  if (Array.isArray(value)) return value.map((v) => hostile(v, evil)) as T;
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value).map(([k, v]) => [
    LABEL_MAPS.has(key) ? `${k}${evil}` : k,
    hostile(v, evil, k),
  ]);
  return Object.fromEntries(entries) as T;
}

const AGO = '2026-03-10T11:58:00.000Z';
const endpoint = { address: '10.0.0.5', workload: 'web-1', labels: { app: 'shop' } };
const flow = {
  src: endpoint,
  dst: { address: '203.0.113.9', ipLists: ['office'] },
  protocol: 'tcp',
  port: 5432,
  direction: 'ingress',
  reportedBy: 'db-1',
  verdict: 'denied',
  ruleId: 'shop-db/ingress/0',
  firstSeen: AGO,
  lastSeen: AGO,
  connections: 3,
  bytes: 100,
};
const impact = {
  summary: { flows: 2, newlyBlocked: 0, newlyAllowed: 1, stillWouldDeny: 1 },
  groups: [
    {
      change: 'newly-allowed',
      src: 'app=shop',
      dst: 'ip-list:office',
      protocol: 'tcp',
      port: 443,
      connections: 2,
      lastSeen: AGO,
      rules: [{ workload: 'db-1', direction: 'ingress', ruleId: 'web/ingress/0' }],
      flows: 1,
    },
  ],
};
const policy = {
  name: 'shop-db',
  scope: { matchLabels: { app: 'shop' } },
  ingress: [{ action: 'allow', peers: [{ cidr: '10.0.0.0/8' }], services: ['postgres'] }],
};
const objectChange = {
  kind: 'Policy',
  name: 'shop-db',
  change: 'changed',
  fields: ['ingress'],
  before: policy,
  after: { ...policy, description: 'new' },
};

interface Case {
  argv: string[];
  /** `METHOD /path` -> the body served (made hostile). */
  routes: Record<string, unknown>;
  /** The route whose answer `-o json|yaml` prints; none for text-only commands. */
  printed?: string;
  code?: number;
}

const CASES: Record<string, Case> = {
  workloads: {
    argv: ['workloads'],
    routes: {
      'GET /v1/workloads': [
        {
          name: 'db-1',
          addresses: ['10.0.0.7'],
          labels: { app: 'shop', role: 'db' },
          mode: { ingress: 'enforce', egress: 'monitor' },
        },
      ],
    },
  },
  'get policies': {
    argv: ['get', 'policies'],
    routes: { 'GET /v1/policies': [policy] },
  },
  'get services': {
    argv: ['get', 'services'],
    routes: { 'GET /v1/services': [{ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] }] },
  },
  'get ip-lists': {
    argv: ['get', 'ip-lists'],
    routes: { 'GET /v1/ip-lists': [{ name: 'office', cidrs: ['192.0.2.0/24'], except: [] }] },
  },
  agents: {
    argv: ['agents'],
    routes: {
      'GET /v1/agents': [
        {
          id: 'a1b2c3d4-0000-4000-8000-000000000000',
          workload: 'db-1',
          hostname: 'db-1.example',
          connected: true,
          appliedRevision: 3,
          inSync: false,
          lastSeen: AGO,
          lastError: 'nft: syntax error',
          version: '0.1.0',
        },
      ],
    },
  },
  counters: {
    argv: ['counters'],
    routes: {
      'GET /v1/counters': [
        {
          workload: 'db-1',
          ruleId: 'r1',
          direction: 'ingress',
          verdict: 'allow',
          packets: 1,
          bytes: 2,
        },
      ],
    },
  },
  events: {
    argv: ['events'],
    routes: {
      'GET /v1/events': [
        {
          id: 1,
          agentId: 'a1',
          workload: 'db-1',
          code: 'DATAPLANE_TAMPERED',
          message: 'table changed',
          at: AGO,
          attributes: {},
        },
      ],
    },
  },
  revisions: {
    argv: ['revisions'],
    routes: {
      'GET /v1/revisions': [{ revision: 2, author: 'alice', createdAt: AGO, note: 'open 443' }],
    },
  },
  'get tokens': {
    argv: ['get', 'tokens'],
    routes: {
      'GET /v1/tokens': [{ id: 't1', name: 'ci', role: 'admin', createdAt: AGO }],
    },
  },
  'get enrollment-tokens': {
    argv: ['get', 'enrollment-tokens'],
    routes: {
      'GET /v1/enrollment-tokens': [{ id: 'e1', labels: { app: 'shop' }, expiresAt: AGO }],
    },
  },
  audit: {
    argv: ['audit'],
    routes: {
      'GET /v1/audit': [{ id: 1, at: AGO, actor: 'token:ci', action: 'put', target: 'policy/x' }],
    },
  },
  flows: {
    argv: ['flows'],
    routes: { 'GET /v1/flows': { flows: [flow] } },
  },
  map: {
    argv: ['map'],
    routes: {
      'GET /v1/map': {
        groupBy: ['app'],
        nodes: [
          { id: 'app=shop', kind: 'group', name: 'shop', labels: { app: 'shop' } },
          { id: 'external:203.0.113.9', kind: 'external', name: '203.0.113.9' },
        ],
        edges: [
          {
            from: 'app=shop',
            to: 'external:203.0.113.9',
            protocol: 'udp',
            port: 53,
            connections: 1,
            bytes: 1,
            firstSeen: AGO,
            lastSeen: AGO,
            observed: { allowed: 1, denied: 0, 'would-deny': 0 },
            policy: 'allowed',
          },
        ],
      },
    },
  },
  'map --dot': {
    argv: ['map', '--dot'],
    routes: {},
  },
  impact: {
    argv: ['impact'],
    routes: { 'POST /v1/impact': impact },
  },
  draft: {
    argv: ['draft'],
    routes: { 'GET /v1/draft': { basedOn: 2, changes: [objectChange] } },
  },
  'diff --from': {
    argv: ['diff', '--from', '1'],
    routes: {
      'GET /v1/revisions/1/diff': {
        from: 1,
        to: 'draft',
        objects: [objectChange],
        workloads: [
          {
            workload: 'db-1',
            change: 'changed',
            rulesAdded: ['shop-db/ingress/1'],
            rulesRemoved: ['old/ingress/0'],
            entriesAdded: 1,
            entriesRemoved: 1,
          },
        ],
      },
    },
    code: 5,
  },
  provision: {
    argv: ['provision', '--note', 'n'],
    routes: {
      'POST /v1/provision': { revision: 3, changed: ['db-1'], unchanged: 1, impact },
    },
  },
  recommend: {
    argv: ['recommend', '--workload', 'db-1'],
    routes: {
      'POST /v1/recommendations': {
        policies: [policy],
        coverage: { observed: 2, allowedWithProposal: 1, allowedByCurrent: 0 },
        uncovered: [flow],
      },
    },
  },
  revoke: {
    argv: ['revoke', 'a1b2'],
    routes: {
      'GET /v1/agents': [{ id: 'a1b2c3d4' }],
    },
  },
  mode: {
    argv: ['mode', 'db-1', '--ingress', 'enforce'],
    routes: { 'PATCH /v1/workloads/db-1': { name: 'db-1', mode: { ingress: 'enforce' } } },
  },
};
CASES['map --dot']!.routes = CASES.map!.routes;

/** Serves the case's routes made hostile; any other request gets a plain 200. */
function serve(routes: Record<string, unknown>, evil = EVIL): Record<string, unknown> {
  const served = Object.fromEntries(Object.entries(routes).map(([k, v]) => [k, hostile(v, evil)]));
  fx.api.override = (r): Answer => {
    const route = `${r.method} ${r.url.split('?')[0]}`;
    return route in served ? { status: 200, body: served[route] } : { status: 200, body: {} };
  };
  return served;
}

function expectNoRaw(text: string): void {
  const found = RAW.exec(text);
  expect(found && `U+${found[0].charCodeAt(0).toString(16)} at ${found.index}`).toBeNull();
}

describe('hostile strings from the API', () => {
  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: shown escaped, never raw`, async () => {
      serve(c.routes);
      const r = await fx.connected(c.argv);
      expect(r.stderr).not.toMatch(/^error/m);
      expect(r.code).toBe(c.code ?? 0);
      expectNoRaw(r.stdout);
      expectNoRaw(r.stderr);
      // The hostile text was printed, visibly: the check above is not passing on nothing.
      expect(r.stdout + r.stderr).toContain('\\x1b]52;c;');
    });
  }

  const printed = Object.entries(CASES).filter(
    ([n]) => !['map --dot', 'revoke', 'mode'].includes(n),
  );
  // Each alone too: a string without C0 controls is one YAML would otherwise leave unquoted.
  const evils = { all: EVIL, 'bidi only': '\u202etxt\u2066', 'C1 and DEL only': '\x9b2J\x7f' };
  for (const [name, c] of printed) {
    for (const [what, evil] of Object.entries(evils)) {
      it(`${name} -o json and -o yaml (${what}): exactly what the server sent`, async () => {
        const served = serve(c.routes, evil);
        const body = Object.values(served)[0];
        const json = await fx.connected(['-o', 'json', ...c.argv]);
        expect(json.code).toBe(c.code ?? 0);
        expectNoRaw(json.stdout);
        expect(JSON.parse(json.stdout)).toEqual(body);
        const yaml = await fx.connected(['-o', 'yaml', ...c.argv]);
        expectNoRaw(yaml.stdout);
        expect(parseYaml(yaml.stdout)).toEqual(body);
      });
    }
  }

  it('recommend: the proposed policies on stdout stay exact for apply -f', async () => {
    const served = serve(CASES.recommend!.routes);
    const r = await fx.connected(CASES.recommend!.argv);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS());
    const { policies } = served['POST /v1/recommendations'] as { policies: object[] };
    expect(docs).toEqual(policies.map((p) => ({ kind: 'Policy', ...p })));
  });

  it('an error message and its details from the server', async () => {
    fx.api.override = () => ({
      status: 400,
      body: hostile({
        error: {
          code: 'VALIDATION_FAILED',
          message: 'bad name',
          details: [{ path: 'name', message: 'too long' }],
        },
      }),
    });
    const r = await fx.connected(['workloads']);
    expect(r.code).toBe(1);
    expectNoRaw(r.stderr);
    expect(r.stderr).toContain('error: bad name\\x1b]52;c;');
    expect(r.stderr).toContain('  name\\x1b]52;c;');
  });

  it('a provision refused for its impact', async () => {
    fx.api.override = () => ({
      status: 409,
      body: {
        error: {
          code: 'IMPACT_CONFIRMATION_REQUIRED',
          message: hostile('refused'),
          impact: hostile({ ...impact, summary: { ...impact.summary, newlyBlocked: 1 } }),
        },
      },
    });
    const r = await fx.connected(['provision', '--note', 'n']);
    expect(r.code).toBe(4);
    expectNoRaw(r.stdout + r.stderr);
    expect(r.stdout).toContain('\\x1b]52;c;');
  });
});

describe('escapeControls', () => {
  it('escapes C0 but tab and newline, DEL, C1 and bidi controls; leaves other text alone', () => {
    expect(escapeControls('a\x1b[31mb\x9bc\x7fd\u202ee\u2069f\r\b\x00')).toBe(
      'a\\x1b[31mb\\u009bc\\u007fd\\u202ee\\u2069f\\x0d\\x08\\x00',
    );
    expect(escapeControls('tab\tnew\nline é 漢字 ‎\u200f')).toBe('tab\tnew\nline é 漢字 ‎\u200f');
  });

  it('is idempotent, so that the writers may apply it to text already escaped', () => {
    const once = escapeControls(EVIL);
    expect(escapeControls(once)).toBe(once);
  });

  it('render: JSON and YAML hold no raw control and parse back exactly', () => {
    for (const evil of [EVIL, '\u202e', '\x9b', '\x7f']) {
      const value = hostile({ name: 'x', labels: { app: 'y' }, list: ['z'] }, evil);
      const json = render(value, 'json');
      const yaml = render(value, 'yaml');
      expectNoRaw(json + yaml);
      expect(JSON.parse(json)).toEqual(value);
      expect(parseYaml(yaml)).toEqual(value);
    }
  });

  it('keeps table columns aligned by the escaped width', () => {
    const text = render(
      [
        { name: 'a\x1b', n: 1 },
        { name: 'bbbbbb', n: 2 },
      ],
      'table',
    );
    expect(text).toBe('NAME    N\na\\x1b   1\nbbbbbb  2\n');
  });
});
