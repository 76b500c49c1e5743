import { describe, expect, it } from 'vitest';
import { elementRange, rangeElement, updateElements } from './group-elements.js';

/** Ranges of both families: single addresses, a span, an IPv4-mapped IPv6 range. */
const RANGES = [
  { from: '10.0.0.1', to: '10.0.0.1' },
  { from: '10.0.0.0', to: '10.0.255.255' },
  { from: 'fd00::1', to: 'fd00::1' },
  { from: '::ffff:10.0.0.1', to: '::ffff:10.0.0.9' },
];

describe('group elements', () => {
  it('turns ranges into element texts and back, for both families', () => {
    for (const r of RANGES) {
      const { family, text } = rangeElement(r);
      expect(family).toBe(r.from.includes(':') ? 6 : 4);
      expect(JSON.parse(text)).toEqual({
        concat: [r.from === r.to ? r.from : { range: [r.from, r.to] }, `ipv${family}`],
      });
      expect(elementRange(text)).toEqual(r);
    }
  });

  it('refuses what is not two addresses of one family in order', () => {
    for (const r of [
      { from: '10.0.0.9', to: '10.0.0.1' },
      { from: '10.0.0.1', to: 'fd00::1' },
      { from: '10.0.0.1"', to: '10.0.0.1"' },
      { from: 'fd00::9', to: 'fd00::1' },
    ]) {
      expect(() => rangeElement(r), JSON.stringify(r)).toThrow(/is not an address range/);
    }
  });

  it('reads the packed form as the same elements as the text form, and refuses what is not ranges', () => {
    const text = [...RANGES, { from: '2001:db8::', to: '2001:db8:0:0:1::' }];
    const bytes = (a: string) =>
      Buffer.from(a.includes(':') ? ipv6Bytes(a) : a.split('.').map(Number));
    const pack = (family: 4 | 6) =>
      Buffer.concat(
        text
          .filter((r) => r.from.includes(':') === (family === 6))
          .flatMap((r) => [bytes(r.from), bytes(r.to)]),
      );
    const none = Buffer.alloc(0);
    const group = {
      id: 'g',
      created: true,
      deleted: false,
      added: [],
      removed: [],
      packed: { addedV4: pack(4), addedV6: pack(6), removedV4: none, removedV6: none },
    };
    expect([...updateElements(group, 'added')]).toEqual(text.map(rangeElement));
    expect([...updateElements(group, 'removed')]).toEqual([]);
    for (const addedV6 of [Buffer.alloc(31), Buffer.concat([bytes('fd00::9'), bytes('fd00::1')])]) {
      const bad = { ...group, packed: { ...group.packed, addedV6 } };
      expect(() => [...updateElements(bad, 'added')]).toThrow(/packed/);
    }
  });
});

/** An IPv6 address's 16 bytes (the test's own parse: groups, `::` expanded, a dotted tail). */
function ipv6Bytes(a: string): number[] {
  const m = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  const tail = m ? [Number(m[1]) * 256 + Number(m[2]), Number(m[3]) * 256 + Number(m[4])] : [];
  const body = m ? a.slice(0, -m[0].length).replace(/:$/, '') : a;
  const [head = '', rest] = body.split('::');
  const groups = (x: string) => (x === '' ? [] : x.split(':').map((h) => Number.parseInt(h, 16)));
  const h = groups(head);
  const t = [...(rest === undefined ? [] : groups(rest)), ...tail];
  const all = [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
  return all.flatMap((g) => [g >> 8, g & 255]);
}
