import type { PolicyState } from '@bulkhead/policy';
import { describe, expect, it } from 'vitest';
import type { FlowRow } from '../visibility/flow-store.js';
import { createImpactGate } from './impact-gate.js';

const mode = { ingress: 'enforce', egress: 'monitor' } as const;
const state = (allowWeb: boolean): PolicyState => ({
  workloads: [
    { name: 'web', addresses: ['10.0.0.1'], labels: { app: 'web' }, mode },
    { name: 'db', addresses: ['10.0.0.2'], labels: { app: 'db' }, mode },
  ],
  ipLists: [],
  services: [{ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] }],
  policies: [
    {
      name: 'db',
      scope: { matchLabels: { app: 'db' } },
      ingress: allowWeb
        ? [
            {
              action: 'allow',
              peers: [{ selector: { matchLabels: { app: 'web' } } }],
              services: ['pg'],
            },
          ]
        : [],
    },
  ],
});
const flow: FlowRow = {
  workload: 'db',
  direction: 'ingress',
  src: '10.0.0.1',
  dst: '10.0.0.2',
  protocol: 6,
  port: 5432,
  verdict: 'allowed',
  ruleId: 'db/ingress/0',
  connections: 3,
  bytes: 100,
  firstSeen: '2026-01-01T00:00:00.000Z',
  lastSeen: '2026-01-01T00:00:00.000Z',
};

/** A flow source that reports every question as after a removal: each reads `rows` whole. */
const rereads = (rows: () => Iterator<FlowRow>) => {
  let loggedSince = 0;
  return {
    observedFlows: () => rows() as IterableIterator<FlowRow>,
    flowChanges: () => ({ seq: 0, loggedSince: ++loggedSince }),
    changedFlows: (): IterableIterator<FlowRow> => {
      throw new Error('not kept');
    },
  };
};

describe('impact gate', () => {
  it('builds no decisions while no flow asks for one', () => {
    let rows: FlowRow[] = [];
    const gate = createImpactGate(rereads(() => rows.values()));
    // A state no calculator loads (an unknown service): building its decisions throws.
    const broken = state(true);
    broken.policies[0]!.ingress![0]!.services = ['nope'];
    expect(gate.between(state(true), broken).summary).toMatchObject({ flows: 0 });
    rows = [flow];
    expect(() => gate.between(state(true), broken)).toThrow(/not valid/);
    // And with flows, the report is what the states decide.
    expect(gate.between(state(true), state(false)).summary).toMatchObject({
      flows: 1,
      newlyBlocked: 1,
    });
  });

  it('ends its read of the flows before it loads a state (the database stays usable)', () => {
    let ended = false;
    const rows = [flow].values();
    const gate = createImpactGate(
      rereads(() => ({
        next: () => {
          const r = rows.next();
          ended ||= r.done === true;
          return r;
        },
        return: (v?: unknown) => {
          ended = true;
          return { done: true as const, value: v };
        },
        [Symbol.iterator]() {
          return this;
        },
      })),
    );
    const broken = state(true);
    broken.policies[0]!.ingress![0]!.services = ['nope'];
    expect(() => gate.between(state(true), broken)).toThrow(/not valid/);
    expect(ended).toBe(true);
  });
});
