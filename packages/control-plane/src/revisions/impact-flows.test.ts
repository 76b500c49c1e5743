import type { PolicyState } from '@bulkhead/policy';
import { describe, expect, it } from 'vitest';
import { prng, type Rng } from '../random.test-util.js';
import { createSqliteStores } from '../store/index.js';
import type { FlowDelta } from '../visibility/store.js';
import { createImpactGate } from './impact-gate.js';
import { change, PORTS, policy, workload } from './random-states.test-util.js';

const HOUR = 3_600_000;
const T0 = Date.parse('2026-03-01T00:00:00.000Z');
// Workloads' addresses, one no workload owns, and text that is no address.
const ADDRESSES = [...Array.from({ length: 10 }, (_, i) => `10.0.0.${i}`), '192.0.2.7', 'nope'];

function delta(rng: Rng, now: number): FlowDelta {
  const lastSeen = new Date(now - rng.int(48) * HOUR).toISOString();
  return {
    direction: rng.pick(['ingress', 'egress'] as const),
    src: rng.pick(ADDRESSES),
    dst: rng.pick(ADDRESSES),
    // ICMP has no ports: its rows of any port are one flow.
    protocol: rng.pick([6, 6, 17, 1]),
    port: rng.pick([...PORTS, 9000]),
    verdict: rng.pick(['allowed', 'denied'] as const),
    ruleId: rng.pick(['r1', 'r2']),
    connections: rng.int(5),
    bytes: 1,
    firstSeen: lastSeen,
    lastSeen,
  };
}

describe('impact flows kept between plans', () => {
  it('report what a fresh read reports, after random flow writes, removals and state changes', () => {
    let moved = 0;
    // The kept fold is read whole once per seed; removals after are taken out one by one.
    let wholeReads = 0;
    let removals = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const rng = prng(seed);
      let clock = T0;
      // A cap that some writes reach, so that they evict rows too.
      const stores = createSqliteStores({
        path: ':memory:',
        now: () => new Date(clock),
        maxFlowRows: 150,
        flowRetentionDays: 1,
      });
      const { visibility } = stores;
      const kept = createImpactGate({
        observedFlows(window) {
          wholeReads++;
          return visibility.observedFlows(window);
        },
        flowChanges: () => visibility.flowChanges(),
        *changedFlows(seq) {
          for (const row of visibility.changedFlows(seq)) {
            if ('removed' in row) removals++;
            yield row;
          }
        },
      });
      let provisioned: PolicyState = {
        workloads: Array.from({ length: 6 }, (_, i) => workload(rng, i)),
        policies: Array.from({ length: 3 }, (_, i) => policy(rng, i)),
        services: [],
        ipLists: [],
      };
      let draft = provisioned;
      const drafts = [draft];
      const written: Array<{ name: string; flow: FlowDelta }> = [];
      for (let step = 0; step < 25; step++) {
        const roll = rng.int(12);
        if (roll < 5) {
          const flows = Array.from({ length: 1 + rng.int(8) }, () => delta(rng, clock));
          const name = `w${rng.int(6)}`;
          stores.tx(() => stores.visibility.recordTelemetry('a', name, flows, []));
          written.push(...flows.map((flow) => ({ name, flow })));
        } else if (roll < 7 && written.length > 0) {
          // Seen again by the same end: its total grows in the kept fold.
          const { name, flow } = rng.pick(written);
          const again = { ...flow, connections: 1 + rng.int(5) };
          stores.tx(() => stores.visibility.recordTelemetry('a', name, [again], []));
        } else if (roll === 7) {
          stores.tx(() => stores.visibility.deleteWorkload(`w${rng.int(6)}`));
        } else if (roll === 8) {
          clock += rng.int(30) * HOUR;
          stores.visibility.pruneFlows();
        } else if (roll === 9) {
          provisioned = draft; // a revision
        } else if (roll === 10) {
          provisioned = rng.pick(drafts); // a rollback
        } else {
          draft = change(rng, draft);
          drafts.push(draft);
        }
        const groupBy = rng.pick([undefined, ['app'], ['env', 'app']]);
        const fresh = createImpactGate(stores.visibility);
        const report = kept.between(provisioned, draft, { groupBy });
        expect(report, `seed ${seed} step ${step}`).toEqual(
          fresh.between(provisioned, draft, { groupBy }),
        );
        moved += report.groups.length;
      }
      stores.close();
    }
    // The states move flows often enough for the kept counts and times to show.
    expect(moved).toBeGreaterThan(500);
    expect(wholeReads).toBe(40);
    expect(removals).toBeGreaterThan(500);
  });
});
