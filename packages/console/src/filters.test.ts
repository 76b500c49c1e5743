import type { MapEdge, MapView } from '@bulkhead/api';
import { describe, expect, it } from 'vitest';
import {
  filterMap,
  matchesLabels,
  pairEdges,
  parseLabelFilter,
  query,
  sinceOf,
} from './filters.js';

const edge = (from: string, to: string, port: number, policy: MapEdge['policy']): MapEdge => ({
  from,
  to,
  protocol: 'tcp',
  port,
  connections: 1,
  bytes: 10,
  firstSeen: '2026-11-30T00:00:00.000Z',
  lastSeen: '2026-11-30T00:00:00.000Z',
  observed: { allowed: 0, denied: 0, 'would-deny': 0 },
  policy,
});

const VIEW: MapView = {
  groupBy: ['app', 'role'],
  nodes: [
    { id: 'app=shop,role=db', kind: 'group', name: 'shop-db', labels: { app: 'shop', role: 'db' } },
    {
      id: 'app=shop,role=web',
      kind: 'group',
      name: 'shop-web',
      labels: { app: 'shop', role: 'web' },
    },
    { id: 'app=ops', kind: 'group', name: 'ops', labels: { app: 'ops' } },
    { id: 'external:8.8.8.8', kind: 'external', name: '8.8.8.8' },
  ],
  edges: [
    edge('app=shop,role=web', 'app=shop,role=db', 5432, 'allowed'),
    edge('app=shop,role=web', 'external:8.8.8.8', 53, 'would-deny'),
    edge('app=ops', 'app=shop,role=db', 22, 'denied'),
  ],
};

describe('console filters', () => {
  it('turns a window into since, and leaves it out for everything kept', () => {
    const now = new Date('2026-11-30T12:00:00.000Z');
    expect(sinceOf('1h', now)).toBe('2026-11-30T11:00:00.000Z');
    expect(sinceOf('7d', now)).toBe('2026-11-23T12:00:00.000Z');
    expect(sinceOf('all', now)).toBeUndefined();
  });

  it('builds query strings of the set values only, encoded', () => {
    expect(query({ groupBy: 'app,role', since: undefined, label: '' })).toBe('?groupBy=app%2Crole');
    expect(query({ workload: 'a&b=c' })).toBe('?workload=a%26b%3Dc');
    expect(query({})).toBe('');
  });

  it('parses label filters: key=value, or a key that must exist', () => {
    const f = parseLabelFilter(' app = shop , role ,');
    expect(f).toEqual([
      ['app', 'shop'],
      ['role', undefined],
    ]);
    expect(matchesLabels({ app: 'shop', role: 'db' }, f)).toBe(true);
    expect(matchesLabels({ app: 'shop' }, f)).toBe(false);
    expect(matchesLabels({ app: 'ops', role: 'db' }, f)).toBe(false);
    expect(matchesLabels(undefined, [])).toBe(true);
  });

  it('keeps the edges touching selected nodes, and the nodes at their other end', () => {
    expect(filterMap(VIEW, '')).toEqual({ nodes: VIEW.nodes, edges: VIEW.edges });
    const db = filterMap(VIEW, 'role=db');
    expect(db.edges.map((e) => e.port)).toEqual([5432, 22]);
    expect(db.nodes.map((n) => n.name)).toEqual(['shop-db', 'shop-web', 'ops']);
    expect(filterMap(VIEW, 'app=none')).toEqual({ nodes: [], edges: [] });
  });

  it('draws one line per pair, coloured by its worst service', () => {
    const pairs = pairEdges([
      edge('a', 'b', 1, 'allowed'),
      edge('a', 'b', 2, 'not-covered'),
      edge('b', 'a', 3, 'allowed'),
      edge('a', 'b', 4, 'would-deny'),
    ]);
    expect(pairs.map((p) => [p.from, p.to, p.policy, p.edges.length])).toEqual([
      ['a', 'b', 'would-deny', 3],
      ['b', 'a', 'allowed', 1],
    ]);
    expect(
      pairEdges([edge('a', 'b', 1, 'would-deny'), edge('a', 'b', 2, 'denied')])[0]!.policy,
    ).toBe('denied');
  });
});
