import type { PolicyState, Workload } from '@bulkhead/policy';
import { type PolicyUpdate, SyncResponse } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import type { AgentStream } from '../fleet/streams.js';
import { silentLog } from '../test-support.js';
import { createRevisionFollower } from './follower.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const workload = (name: string, address: string): Workload => ({
  name,
  addresses: [address],
  labels: { app: name },
  mode: monitor,
});
const allowFrom = (peer: string) => ({
  name: 'web',
  scope: { matchLabels: { app: 'web' } },
  ingress: [
    {
      action: 'allow' as const,
      peers: [{ selector: { matchLabels: { app: peer } } }],
      services: [{ protocol: 'tcp' as const, port: 443 }],
    },
  ],
});
const state = (peer: string, workloads: Workload[]): PolicyState => ({
  workloads,
  ipLists: [],
  services: [],
  policies: [allowFrom(peer)],
});

/** A synced stream that records the updates it was sent. */
function stream(name: string, synced: string): AgentStream & { updates: PolicyUpdate[] } {
  const updates: PolicyUpdate[] = [];
  return {
    agentId: `agent-${name}`,
    workload: name,
    synced,
    updates,
    send: (m) => {
      const u = SyncResponse.decode(m).update;
      if (u?.last) updates.push(u);
    },
    close: () => {},
  };
}

describe('revision follower', () => {
  it('sends each workload the state of the side it follows, and switches with a sync', () => {
    const workloads = [workload('web', '10.0.0.1'), workload('a', '10.0.0.2')];
    const streams = new Map<string, ReturnType<typeof stream>>();
    const follower = createRevisionFollower({
      streams: { ofWorkload: (w) => [streams.get(w)!].filter(Boolean) },
      asOf: (_, ws) => ws,
      log: silentLog,
    });
    follower.load(state('a', workloads), 1);
    const baseHash = follower.desired('web')!.hash;
    streams.set('web', stream('web', baseHash));
    streams.set('a', stream('a', follower.desired('a')!.hash));

    follower.begin(state('b', workloads), 2);
    expect(follower.desired('web')).toEqual({ hash: baseHash, revision: 1 });
    expect(follower.follow(['web'], 'next')).toEqual(['web']);
    expect(follower.follow(['web'], 'next')).toEqual([]);
    const web = streams.get('web')!;
    expect(web.updates).toMatchObject([{ revision: 2, full: true }]);
    expect(follower.desired('web')?.revision).toBe(2);
    expect(follower.sideOf('web')).toBe('next');

    // A new workload b: web's rule set changes on its side only (next names b, base does not).
    const b = workload('b', '10.0.0.3');
    expect(follower.workloadsChanged([{ name: 'b', workload: b }])).toEqual(['b', 'web']);
    expect(web.updates.at(-1)).toMatchObject({ revision: 2, full: false });
    expect(web.updates).toHaveLength(2);

    // Back to base: a full sync of base's state; the next side's changes no longer reach it.
    follower.follow(['web'], 'base');
    expect(web.updates.at(-1)).toMatchObject({ revision: 1, full: true, hash: baseHash });
    expect(web.synced).toBe(baseHash);
    expect(streams.get('a')!.updates).toEqual([]);

    // Completed: base takes the rollout's revision; web (on base) gets it as a delta.
    follower.follow(['web'], 'next');
    const sent = web.updates.length;
    follower.end({ ipLists: [], services: [], policies: [allowFrom('b')] }, 2);
    expect(follower.active).toBe(false);
    expect(follower.sideOf('web')).toBe('base');
    // web already held revision 2's content: nothing more is sent.
    expect(web.updates).toHaveLength(sent);
    expect(follower.desired('web')?.revision).toBe(2);
  });
});
