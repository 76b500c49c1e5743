import { Action, Direction, type GroupRuleSet, PolicyUpdate, SyncResponse } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { rangesOf } from '../sync-session.test-util.js';
import { encodeBodies, encodeGroup, frameUpdate, grpcFrameOf, MAX_MESSAGE } from './encode.js';

const range = (i: number) => ({ family: 4 as const, from: BigInt(i * 4), to: BigInt(i * 4 + 1) });

const ruleSet = (workloadId: string, ingressMode: number): GroupRuleSet => ({
  workloadId,
  revision: 0,
  hash: `rs-${workloadId}`,
  ingressMode,
  egressMode: 0,
  rules: [
    {
      id: 'p/ingress/0',
      direction: Direction.DIRECTION_INGRESS,
      action: Action.ACTION_ALLOW,
      policy: 'p',
      groups: ['sel:a'],
      services: [{ protocol: 6, portFrom: 443, portTo: 443 }],
    },
  ],
});

describe('frameUpdate', () => {
  it('writes the same bytes as the generated encoder, header fields present or not', () => {
    const parts = encodeGroup(
      { id: 'sel:a', added: [range(1), range(2)], removed: [range(3)] },
      'text',
    );
    const bodies = encodeBodies(undefined, parts);
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

  it('writes each agent its own rule set fields around rules encoded once', () => {
    const parts = encodeGroup({ id: 'sel:a', added: [range(1)] }, 'text');
    const shared = ruleSet('w', 0);
    const bodies = encodeBodies(shared.rules, parts);
    for (const [i, own] of [
      { ...shared },
      { ...ruleSet('other-host', 2), rules: shared.rules },
    ].entries()) {
      const header = { baseHash: 'b', hash: `h${i}`, revision: 12, full: i === 0 };
      const [message] = frameUpdate(header, bodies, own);
      const expected = SyncResponse.encode({
        update: {
          ...header,
          last: true,
          ruleSet: { ...own, revision: 12 },
          groups: PolicyUpdate.decode(parts[0]!).groups,
        },
      }).finish();
      expect(Buffer.from(message!).equals(Buffer.from(expected))).toBe(true);
    }
  });

  it('keeps the gRPC frame of each message in front of it, in the same memory', () => {
    const rs = ruleSet('w', 1);
    const [message] = frameUpdate(
      { baseHash: '', hash: 'h', revision: 3, full: true },
      encodeBodies(
        rs.rules,
        encodeGroup({ id: 'sel:a', created: true, added: [range(1)] }, 'packed'),
      ),
      rs,
    );
    const frame = grpcFrameOf(message!)!;
    expect(frame.buffer).toBe(message!.buffer);
    expect(frame.byteOffset + 5).toBe(message!.byteOffset);
    expect(frame[0]).toBe(0);
    expect(frame.readUInt32BE(1)).toBe(message!.length);
    expect(frame.length).toBe(message!.length + 5);
    expect(grpcFrameOf(Buffer.from(message!))).toBeUndefined();
  });

  it.each(['text', 'packed'] as const)(
    'marks only the last of several chunks, each within the message limit (%s)',
    (form) => {
      const big = Array.from({ length: form === 'text' ? 150_000 : 300_000 }, (_, i) => range(i));
      const rs = ruleSet('w', 1);
      const bodies = encodeBodies(rs.rules, encodeGroup({ id: 'list:big', added: big }, form));
      expect(bodies.length).toBeGreaterThan(1);
      const messages = frameUpdate(
        { baseHash: 'a', hash: 'b', revision: 1, full: false },
        bodies,
        rs,
      );
      const updates = messages.map((m) => SyncResponse.decode(m).update!);
      expect(updates.map((u) => u.last)).toEqual(bodies.map((_, i) => i === bodies.length - 1));
      expect(updates.map((u) => u.ruleSet?.workloadId)).toEqual(
        bodies.map((_, i) => (i === 0 ? 'w' : undefined)),
      );
      expect(updates.every((u) => u.hash === 'b' && u.baseHash === 'a')).toBe(true);
      expect(messages.every((m) => m.length <= MAX_MESSAGE)).toBe(true);
      expect(updates.flatMap((u) => u.groups.flatMap((g) => rangesOf(g, 'added'))).length).toBe(
        big.length,
      );
    },
  );
});

describe('encodeGroup', () => {
  it('gives the same ranges in the packed form as in the text form, in order, IPv4 and IPv6', () => {
    const v6 = (from: bigint, to: bigint) => ({ family: 6 as const, from, to });
    const change = {
      id: 'list:x',
      created: true,
      added: [
        range(0),
        { family: 4 as const, from: 0xffffffffn, to: 0xffffffffn },
        v6(0n, 0n),
        v6(0x20010db8n << 96n, (0x20010db8n << 96n) | 0xffffn),
        v6(0xffffc0a80001n, 0xffffc0a800ffn),
        v6((1n << 128n) - 1n, (1n << 128n) - 1n),
      ],
      removed: [range(7)],
    };
    const read = (form: 'text' | 'packed') =>
      encodeGroup(change, form).flatMap((p) => PolicyUpdate.decode(p).groups);
    const [text, packed] = [read('text'), read('packed')];
    expect(packed).toHaveLength(1);
    expect(packed[0]).toMatchObject({ id: 'list:x', created: true, added: [], removed: [] });
    expect(packed[0]!.packed!.addedV4).toHaveLength(2 * 8);
    expect(packed[0]!.packed!.addedV6).toHaveLength(4 * 32);
    for (const key of ['added', 'removed'] as const) {
      expect(rangesOf(packed[0]!, key)).toEqual(rangesOf(text[0]!, key));
    }
    expect(rangesOf(packed[0]!, 'added')).toEqual([
      '0.0.0.0-0.0.0.1',
      '255.255.255.255-255.255.255.255',
      '::-::',
      '2001:db8::-2001:db8::ffff',
      '::ffff:192.168.0.1-::ffff:192.168.0.255',
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    ]);
  });
});
