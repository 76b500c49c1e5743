import { PolicyUpdate, SyncResponse } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { encodeBodies, encodeGroup, frameUpdate, MAX_MESSAGE } from './encode.js';

const range = (i: number) => ({ family: 4 as const, from: BigInt(i * 4), to: BigInt(i * 4 + 1) });

describe('frameUpdate', () => {
  it('writes the same bytes as the generated encoder, header fields present or not', () => {
    const parts = encodeGroup({ id: 'sel:a', added: [range(1), range(2)], removed: [range(3)] });
    const bodies = encodeBodies(undefined, 7, parts);
    const groups = PolicyUpdate.decode(Buffer.concat(bodies[0]!.parts)).groups;
    const headers = [
      { baseHash: 'b'.repeat(64), hash: 'h'.repeat(64), revision: 7, full: false },
      { baseHash: '', hash: 'h', revision: 0, full: true },
      { baseHash: 'é-not-ascii', hash: 'x', revision: 300_000, full: false },
    ];
    for (const header of headers) {
      const [message, ...more] = frameUpdate(header, bodies);
      expect(more).toEqual([]);
      const expected = SyncResponse.encode({
        update: { ...header, last: true, ruleSet: undefined, groups },
      }).finish();
      expect(Buffer.from(message!).equals(Buffer.from(expected))).toBe(true);
    }
  });

  it('marks only the last of several chunks, each within the message limit', () => {
    const big = Array.from({ length: 150_000 }, (_, i) => range(i));
    const bodies = encodeBodies(undefined, 1, encodeGroup({ id: 'list:big', added: big }));
    expect(bodies.length).toBeGreaterThan(1);
    const messages = frameUpdate({ baseHash: 'a', hash: 'b', revision: 1, full: false }, bodies);
    const updates = messages.map((m) => SyncResponse.decode(m).update!);
    expect(updates.map((u) => u.last)).toEqual(bodies.map((_, i) => i === bodies.length - 1));
    expect(updates.every((u) => u.hash === 'b' && u.baseHash === 'a')).toBe(true);
    expect(messages.every((m) => m.length <= MAX_MESSAGE)).toBe(true);
    expect(updates.flatMap((u) => u.groups.flatMap((g) => g.added)).length).toBe(big.length);
  });
});
