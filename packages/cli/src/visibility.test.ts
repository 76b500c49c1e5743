import { execFileSync } from 'node:child_process';
import type { FlowView, MapView } from '@bulkhead/api';
import { describe, expect, it } from 'vitest';
import { useCliFixture } from './test-util.js';

const NOW = new Date('2026-03-10T12:00:00.000Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();

const fx = useCliFixture({ prefix: 'bulkhead-cli-vis-', now: NOW });
/** The CLI in-process against the fake, with the clock pinned at NOW. */
const cli = (...argv: string[]) => fx.connected(argv);

function answer(path: string, body: unknown): void {
  fx.api.override = (r) => (r.url.split('?')[0] === path ? { status: 200, body } : undefined);
}

const query = (i = 0) => new URL(fx.api.requests[i]!.url, 'http://x').searchParams;

const FLOWS: FlowView[] = [
  {
    src: { address: '10.0.0.5', workload: 'web-1', labels: { app: 'shop', role: 'web' } },
    dst: { address: '10.0.0.7', workload: 'db-1', labels: { app: 'shop', role: 'db' } },
    protocol: 'tcp',
    port: 5432,
    direction: 'ingress',
    reportedBy: 'db-1',
    verdict: 'allowed',
    ruleId: 'shop-db/ingress/0',
    firstSeen: ago(86400e3),
    lastSeen: ago(120e3),
    connections: 12,
    bytes: 4096,
  },
  {
    src: { address: '203.0.113.9', ipLists: ['office'] },
    dst: { address: '10.0.0.5', workload: 'web-1' },
    protocol: 'icmp',
    port: 0,
    direction: 'ingress',
    reportedBy: 'web-1',
    verdict: 'would-deny',
    ruleId: 'default',
    firstSeen: ago(7200e3),
    lastSeen: ago(3 * 3600e3 + 59e3),
    connections: 1,
    bytes: 84,
  },
];

describe('flows', () => {
  it('sends every filter as the API names it, durations as now minus', async () => {
    answer('/v1/flows', { flows: [] });
    const r = await cli(
      'flows',
      '--workload',
      'web-1',
      '--label',
      'app=shop',
      '--label',
      'env=prod',
      '--port',
      '5432',
      '--protocol',
      'TCP',
      '--verdict',
      'denied',
      '--since',
      '24h',
      '--until',
      '30m',
      '--new-since',
      '2026-03-03T00:00:00Z',
      '--limit',
      '50',
    );
    expect(r.code).toBe(0);
    expect(fx.api.requests[0]!.url.split('?')[0]).toBe('/v1/flows');
    const q = query();
    expect(q.get('workload')).toBe('web-1');
    expect(q.getAll('label')).toEqual(['app=shop', 'env=prod']);
    expect(q.get('port')).toBe('5432');
    expect(q.get('protocol')).toBe('tcp');
    expect(q.get('verdict')).toBe('denied');
    expect(q.get('since')).toBe('2026-03-09T12:00:00.000Z');
    expect(q.get('until')).toBe('2026-03-10T11:30:00.000Z');
    expect(q.get('newSince')).toBe('2026-03-03T00:00:00.000Z');
    expect(q.get('limit')).toBe('50');
    expect(r.stdout).toBe('no flows\n');
  });

  it('prints a table: workloads by name, other addresses with their ip lists', async () => {
    answer('/v1/flows', { flows: FLOWS });
    const r = await cli('flows');
    expect(r.stdout).toBe(
      [
        'SRC                  DST    PROTO/PORT  SEEN BY   VERDICT                                  RULE               CONNECTIONS  LAST SEEN',
        'web-1                db-1   tcp/5432    db-1 in   allowed                                  shop-db/ingress/0  12           2m ago',
        '203.0.113.9[office]  web-1  icmp        web-1 in  would-deny (default: no rule allows it)  -                  1            3h ago',
        '',
      ].join('\n'),
    );
    expect(new URL(fx.api.requests[0]!.url, 'http://x').search).toBe('');
  });

  it("says which end's direction has no policy, in the words map and explain use", async () => {
    const gap = { workload: 'web-1', direction: 'egress' as const };
    answer('/v1/flows', {
      flows: [
        { ...FLOWS[0]!, noPolicy: [gap] },
        { ...FLOWS[1]!, noPolicy: [{ workload: 'web-1', direction: 'ingress' }] },
      ],
    });
    const verdicts = (await cli('flows')).stdout
      .split('\n')
      .slice(1, 3)
      .map((line) => line.split(/\s{2,}/)[4]);
    expect(verdicts).toEqual([
      "allowed (web-1's egress has no policy)",
      "would-deny (web-1's ingress has no policy)",
    ]);
  });

  it('-o json prints the answer unchanged', async () => {
    answer('/v1/flows', { flows: FLOWS });
    const r = await cli('-o', 'json', 'flows');
    expect(JSON.parse(r.stdout)).toEqual({ flows: FLOWS });
  });

  it.each([
    ['--port', '70000'],
    ['--port', 'http'],
    ['--since', 'yesterday'],
    ['--since', '24'],
    ['--new-since', '2026-13-45'],
    ['--limit', '0'],
    ['--verdict', 'dropped'],
  ])('exits 2 naming %s for %s, sending nothing', async (flag, value) => {
    const r = await cli('flows', flag, value);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(flag);
    expect(fx.api.requests).toEqual([]);
  });

  it('exits 2 when --since is after --until', async () => {
    const r = await cli('flows', '--since', '1h', '--until', '2h');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--since');
    expect(fx.api.requests).toEqual([]);
  });
});

const MAP: MapView = {
  groupBy: ['app', 'role'],
  nodes: [
    { id: 'app=shop,role=web', kind: 'group', name: 'web', labels: { app: 'shop', role: 'web' } },
    { id: 'app=shop,role=db', kind: 'group', name: 'db', labels: { app: 'shop', role: 'db' } },
    { id: 'ip-list:office', kind: 'ip-list', name: 'office' },
    // A name with both DOT metacharacters, to prove quoting.
    { id: 'external:"x\\y', kind: 'external', name: 'say "hi"\\' },
  ],
  edges: [
    edge('app=shop,role=web', 'app=shop,role=db', 'tcp', 5432, 12, 120e3, 'allowed'),
    edge('ip-list:office', 'app=shop,role=web', 'tcp', 443, 1, 30e3, 'not-covered'),
    edge('app=shop,role=web', 'external:"x\\y', 'udp', 53, 3, 5 * 86400e3, 'would-deny'),
    edge('ip-list:office', 'app=shop,role=db', 'tcp', 5432, 2, 3600e3, 'denied'),
  ],
};

function edge(
  from: string,
  to: string,
  protocol: string,
  port: number,
  connections: number,
  age: number,
  policy: MapView['edges'][number]['policy'],
): MapView['edges'][number] {
  return {
    from,
    to,
    protocol,
    port,
    connections,
    bytes: 100,
    firstSeen: ago(age + 1000),
    lastSeen: ago(age),
    observed: { allowed: connections, denied: 0, 'would-deny': 0 },
    policy,
  };
}

/**
 * Just enough of the DOT grammar (graphviz's lexer: quoted strings escape only `"`, and `\\`
 * as a pair) to check what toDot emits and read back nodes, edges and attributes.
 */
function parseDot(text: string) {
  const tokens: string[] = [];
  const re =
    /\s+|("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?)|(->|[{}[\]=;,])|(.)/gs;
  for (const m of text.matchAll(re)) {
    if (m[4] !== undefined) throw new Error(`unexpected ${JSON.stringify(m[4])} in DOT`);
    const t = m[1] ?? m[2] ?? m[3];
    if (t !== undefined) tokens.push(t);
  }
  let i = 0;
  const peek = () => tokens[i];
  const next = () => {
    const t = tokens[i++];
    if (t === undefined) throw new Error('DOT ends early');
    return t;
  };
  const expectTok = (t: string) => {
    const got = next();
    if (got !== t) throw new Error(`expected ${t}, got ${got}`);
  };
  const isId = (t: string | undefined) => t !== undefined && /^["A-Za-z_\-\d]/.test(t);
  const id = () => {
    const t = next();
    if (!isId(t)) throw new Error(`expected an id, got ${t}`);
    return t.startsWith('"') ? t.slice(1, -1).replace(/\\(["\\])/g, '$1') : t;
  };
  const attrs = () => {
    const out: Record<string, string> = {};
    if (peek() !== '[') return out;
    next();
    while (peek() !== ']') {
      const k = id();
      expectTok('=');
      out[k] = id();
      if (peek() === ',' || peek() === ';') next();
    }
    next();
    return out;
  };
  const nodes = new Map<string, Record<string, string>>();
  const edges: Array<{ from: string; to: string; attrs: Record<string, string> }> = [];
  expectTok('digraph');
  if (peek() !== '{') id();
  expectTok('{');
  while (peek() !== '}') {
    const first = id();
    if (['graph', 'node', 'edge'].includes(first) && peek() === '[') attrs();
    else if (peek() === '=') {
      next();
      id();
    } else if (peek() === '->') {
      next();
      edges.push({ from: first, to: id(), attrs: attrs() });
    } else nodes.set(first, attrs());
    if (peek() === ';') next();
  }
  expectTok('}');
  if (i !== tokens.length) throw new Error('text after the graph');
  return { nodes, edges };
}

describe('events', () => {
  const EVENTS = [
    {
      id: 2,
      agentId: 'control-plane',
      workload: 'db-1',
      code: 'ANOMALY_NEW_DEPENDENCY',
      message: 'db-1: first ingress flow with 10.0.0.9 on 6/5432 (allowed)',
      at: ago(60e3),
      attributes: { peer: '10.0.0.9' },
    },
  ];

  it('sends the filters, the time as now minus the duration, and prints a table', async () => {
    answer('/v1/events', EVENTS);
    const r = await cli(
      'events',
      '--kind',
      'ANOMALY_NEW_DEPENDENCY',
      '--workload',
      'db-1',
      '--since',
      '1h',
    );
    expect(r.code).toBe(0);
    expect(Object.fromEntries(query())).toEqual({
      kind: 'ANOMALY_NEW_DEPENDENCY',
      workload: 'db-1',
      since: ago(3600e3),
    });
    expect(r.stdout.split('\n')[0]).toMatch(/^AT\s+WORKLOAD\s+KIND\s+MESSAGE$/);
    expect(r.stdout).toContain('ANOMALY_NEW_DEPENDENCY');
    expect(r.stdout).toContain('first ingress flow with 10.0.0.9');
  });

  it('-o json prints the answer unchanged, attributes included', async () => {
    answer('/v1/events', EVENTS);
    const r = await cli('events', '-o', 'json');
    expect(JSON.parse(r.stdout)).toEqual(EVENTS);
  });
});

describe('map', () => {
  it('prints one aligned line per edge, grouped by source', async () => {
    answer('/v1/map', MAP);
    const r = await cli('map', '--group-by', 'app,role', '--since', '7d');
    expect(r.code).toBe(0);
    expect(query().get('groupBy')).toBe('app,role');
    expect(query().get('since')).toBe('2026-03-03T12:00:00.000Z');
    expect(r.stdout).toBe(
      [
        'ip-list:office          -> db(app=shop,role=db)    tcp/5432  2 conns   last 1h ago   [denied]',
        'ip-list:office          -> web(app=shop,role=web)  tcp/443   1 conn    last 30s ago  [would-deny (default: no rule allows it)]',
        '',
        'web(app=shop,role=web)  -> db(app=shop,role=db)    tcp/5432  12 conns  last 2m ago   [allowed]',
        'web(app=shop,role=web)  -> external:"x\\y           udp/53    3 conns   last 5d ago   [would-deny]',
        '',
      ].join('\n'),
    );
  });

  it('names the end whose direction has no policy on a not-covered edge', async () => {
    const uncovered = {
      ...edge('app=shop,role=web', 'app=shop,role=db', 'tcp', 5432, 1, 30e3, 'not-covered'),
      noPolicy: ['egress' as const],
    };
    answer('/v1/map', { ...MAP, edges: [uncovered] });
    const r = await cli('map');
    expect(r.stdout).toContain("[would-deny (web(app=shop,role=web)'s egress has no policy)]");
  });

  it('--dot emits valid DOT: quoted ids, labels, shapes by kind, colours by policy', async () => {
    answer('/v1/map', MAP);
    const r = await cli('map', '--dot');
    expect(r.code).toBe(0);
    const g = parseDot(r.stdout);
    expect([...g.nodes.keys()]).toEqual(MAP.nodes.map((n) => n.id));
    expect(g.nodes.get('app=shop,role=db')).toEqual({
      label: 'db\\napp=shop\\nrole=db',
      shape: 'box',
    });
    expect(g.nodes.get('ip-list:office')?.shape).toBe('folder');
    expect(g.nodes.get('external:"x\\y')).toEqual({ label: 'say "hi"\\', shape: 'ellipse' });
    const style = (from: string, to: string) =>
      g.edges.find((e) => e.from === from && e.to === to)?.attrs;
    expect(style('app=shop,role=web', 'app=shop,role=db')).toEqual({
      label: 'tcp/5432',
      color: 'green',
    });
    expect(style('ip-list:office', 'app=shop,role=db')?.color).toBe('red');
    expect(style('app=shop,role=web', 'external:"x\\y')?.color).toBe('orange');
    expect(style('ip-list:office', 'app=shop,role=web')).toEqual({
      label: 'tcp/443',
      color: 'grey',
      style: 'dashed',
    });
  });

  // As the README says: checked by Graphviz when it is installed, skipped otherwise.
  it.skipIf(!hasGraphviz())('--dot output is accepted by Graphviz itself', async () => {
    answer('/v1/map', MAP);
    const r = await cli('map', '--dot');
    const svg = execFileSync('dot', ['-Tsvg'], { input: r.stdout }).toString();
    expect(svg).toContain('tcp/5432');
  });

  it('says so when nothing was observed', async () => {
    answer('/v1/map', { groupBy: ['app'], nodes: [], edges: [] });
    expect((await cli('map')).stdout).toBe('no flows observed\n');
  });
});

function hasGraphviz(): boolean {
  try {
    execFileSync('dot', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
