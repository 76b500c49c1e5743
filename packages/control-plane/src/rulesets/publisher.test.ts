import type { PolicyState, Workload } from '@bulkhead/policy';
import { type GroupRuleSet, SyncResponse } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import type { AgentStream } from '../fleet/streams.js';
import { rangesOf } from '../sync-session.test-util.js';
import { silentLog } from '../test-support.js';
import type { RangeForm } from './encode.js';
import { createRuleSetPublisher } from './publisher.js';

const workload = (name: string, app: string, address: string): Workload => ({
  name,
  addresses: [address],
  labels: { app },
  mode: { ingress: 'monitor', egress: 'monitor' },
});
const allow = (peers: object[]) => ({
  name: 'web',
  scope: { matchLabels: { app: 'web' } },
  ingress: [
    { action: 'allow' as const, peers, services: [{ protocol: 'tcp' as const, port: 443 }] },
  ],
});
const fromDb = { selector: { matchLabels: { app: 'db' } } };
const workloads = [
  workload('web-1', 'web', '10.0.0.1'),
  workload('web-2', 'web', '10.0.0.2'),
  workload('db', 'db', '10.0.1.1'),
];
const state = (policies: object[], ipLists: PolicyState['ipLists'] = []): PolicyState =>
  ({ workloads, ipLists, services: [], policies }) as PolicyState;

/**
 * An agent as the wiring contract has it: chunks buffered until `last`, a delta applied on its
 * base hash only. Every message must be the generated encoder's bytes for what it decodes to.
 */
function agent(name: string, ranges: RangeForm) {
  let chunks: NonNullable<SyncResponse['update']>[] = [];
  const held = {
    hash: '',
    ruleSet: undefined as GroupRuleSet | undefined,
    groups: new Map<string, Set<string>>(),
  };
  const stream: AgentStream = {
    agentId: `agent-${name}`,
    workload: name,
    ranges,
    send(m) {
      const decoded = SyncResponse.decode(m);
      expect(Buffer.from(SyncResponse.encode(decoded).finish()).equals(m)).toBe(true);
      chunks.push(decoded.update!);
      if (!decoded.update!.last) return;
      const [first] = chunks;
      if (first!.full) held.groups.clear();
      else expect(first!.baseHash).toBe(held.hash);
      for (const u of chunks) {
        expect([u.hash, u.baseHash, u.revision, u.full]).toEqual([
          first!.hash,
          first!.baseHash,
          first!.revision,
          first!.full,
        ]);
        if (u.ruleSet) held.ruleSet = u.ruleSet;
        for (const g of u.groups) {
          if (g.deleted) {
            held.groups.delete(g.id);
            continue;
          }
          const set = g.created ? new Set<string>() : held.groups.get(g.id)!;
          // Each agent gets its own form only.
          expect(ranges === 'packed' ? g.added.length + g.removed.length : g.packed).toBeFalsy();
          for (const r of rangesOf(g, 'removed')) expect(set.delete(r)).toBe(true);
          for (const r of rangesOf(g, 'added')) set.add(r);
          held.groups.set(g.id, set);
        }
      }
      held.hash = first!.hash;
      chunks = [];
    },
    close() {},
  };
  return { stream, held };
}

describe('rule-set publisher fan-out', () => {
  it('brings every agent, full sync then deltas, to the desired state in canonical bytes', () => {
    // Agents that read the packed form and one that reads text only (an older agent).
    const agents = new Map(
      workloads.map((w) => [w.name, agent(w.name, w.name === 'web-2' ? 'text' : 'packed')]),
    );
    const publisher = createRuleSetPublisher({
      streams: { ofWorkload: (w) => (agents.has(w) ? [agents.get(w)!.stream] : []) },
      log: silentLog,
    });
    const expectInSync = (revision: number) => {
      for (const [name, a] of agents) {
        const desired = publisher.groupForm(name)!;
        expect(a.held.hash).toBe(publisher.desired(name)!.hash);
        expect({ ...a.held.ruleSet, revision: 0 }).toEqual({ ...desired.ruleSet, revision: 0 });
        expect(a.held.ruleSet!.revision).toBeLessThanOrEqual(revision);
        expect(new Map([...a.held.groups].map(([id, s]) => [id, [...s].sort()]))).toEqual(
          new Map(
            desired.groups.map((g) => [g.id, g.ranges.map((r) => `${r.from}-${r.to}`).sort()]),
          ),
        );
      }
    };
    publisher.load(state([allow([fromDb])]), 1);
    for (const a of agents.values()) {
      for (const m of publisher.hello(a.stream, '', () => {})) a.stream.send(m);
    }
    expectInSync(1);

    // New rules for both web hosts (shared rules, each its own workload and hash), a new group.
    const cidrs = Array.from({ length: 300 }, (_, i) => `172.16.${i >> 7}.${(i & 127) * 2}/32`);
    const lists = [{ name: 'peers', cidrs }];
    expect(
      publisher.provisioned(state([allow([fromDb, { ipList: 'peers' }])], lists), 2).sort(),
    ).toEqual(['web-1', 'web-2']);
    expectInSync(2);
    expect(agents.get('web-1')!.held.ruleSet!.rules).toEqual(
      agents.get('web-2')!.held.ruleSet!.rules,
    );
    expect(agents.get('web-1')!.held.ruleSet!.workloadId).toBe('web-1');
    expect(agents.get('web-2')!.held.ruleSet!.workloadId).toBe('web-2');

    // A mode (one agent's rule set only), an address (a group delta for the others).
    publisher.workloadsChanged([
      {
        name: 'web-2',
        workload: { ...workloads[1]!, mode: { ingress: 'enforce', egress: 'monitor' } },
      },
      { name: 'db', workload: { ...workloads[2]!, addresses: ['10.0.1.2'] } },
    ]);
    expectInSync(2);
    // Elements removed again, and a full sync for an agent that lost its place.
    publisher.provisioned(
      state([allow([fromDb, { ipList: 'peers' }])], [{ name: 'peers', cidrs: cidrs.slice(100) }]),
      3,
    );
    const lost = agents.get('web-1')!;
    lost.held.hash = 'lost';
    for (const m of publisher.hello(lost.stream, 'lost', () => {})) lost.stream.send(m);
    expectInSync(3);

    // A restart loads the same state at once: every agent's hash is the one it holds.
    const restarted = createRuleSetPublisher({ streams: { ofWorkload: () => [] }, log: silentLog });
    restarted.load(
      {
        ...state(
          [allow([fromDb, { ipList: 'peers' }])],
          [{ name: 'peers', cidrs: cidrs.slice(100) }],
        ),
        // The third revision set web-2's mode back; the address is the workload's own.
        workloads: [workloads[0]!, workloads[1]!, { ...workloads[2]!, addresses: ['10.0.1.2'] }],
      },
      3,
    );
    for (const [name, a] of agents) expect(restarted.desired(name)!.hash).toBe(a.held.hash);
    expect(new Set([...agents.values()].map((a) => a.held.hash)).size).toBe(agents.size);
  });
});
