import { describe, expect, it } from 'vitest';
import { elementRange, rangeElement } from './group-elements.js';

describe('group elements', () => {
  it('turns ranges into element texts and back, for both families', () => {
    const ranges = [
      { from: '10.0.0.1', to: '10.0.0.1' },
      { from: '10.0.0.0', to: '10.0.255.255' },
      { from: 'fd00::1', to: 'fd00::1' },
      { from: '::ffff:10.0.0.1', to: '::ffff:10.0.0.9' },
    ];
    for (const r of ranges) {
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
});
