import { describe, expect, it } from 'vitest';
import {
  formatAddress,
  type IpRange,
  normalizeRanges,
  parseAddress,
  parseCidr,
  subtractRanges,
} from './ip.js';

function range(cidr: string): IpRange {
  const r = parseCidr(cidr);
  if (!r.ok) throw new Error(r.reason);
  return r.range;
}

function text(ranges: IpRange[]): string[] {
  return ranges.map((r) => `${formatAddress(r.family, r.from)}-${formatAddress(r.family, r.to)}`);
}

describe('parseAddress / formatAddress', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['2001:DB8:0:0:0:0:2:1', '2001:db8::2:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run is compressed
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of equal runs
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::', 'fe80::'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['0:0:0:0:0:ffff:c000:201', '::ffff:192.0.2.1'],
  ])('%s -> %s', (input, canonical) => {
    const a = parseAddress(input);
    expect(a).toBeDefined();
    expect(formatAddress(a!.family, a!.value)).toBe(canonical);
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.0.0.1',
    '01.2.3.4',
    '1.2.3.4/32',
    ':::',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8',
    '12345::',
    'fe80::1%eth0',
    '1.2.3.4::',
    'g::1',
  ])('rejects %j', (input) => {
    expect(parseAddress(input)).toBeUndefined();
  });
});

describe('parseCidr', () => {
  it('parses IPv4 and IPv6 prefixes and bare addresses', () => {
    expect(text([range('10.0.0.0/8')])).toEqual(['10.0.0.0-10.255.255.255']);
    expect(text([range('0.0.0.0/0')])).toEqual(['0.0.0.0-255.255.255.255']);
    expect(text([range('192.0.2.7')])).toEqual(['192.0.2.7-192.0.2.7']);
    expect(text([range('2001:db8::/32')])).toEqual([
      '2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff',
    ]);
    expect(text([range('::/0')])).toEqual(['::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);
  });

  it('explains what is wrong', () => {
    expect(parseCidr('10.0.0.1/8')).toEqual({
      ok: false,
      reason: "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
    });
    expect(parseCidr('10.0.0.0/33')).toEqual({
      ok: false,
      reason: "'10.0.0.0/33' has an invalid prefix length (0..32)",
    });
    expect(parseCidr('fd00::/129')).toMatchObject({ ok: false });
    expect(parseCidr('10.0.0.0/')).toMatchObject({ ok: false });
    expect(parseCidr('10.0.0.0/08')).toMatchObject({ ok: false });
    expect(parseCidr('nope/8')).toEqual({
      ok: false,
      reason: "'nope/8' is not a valid IPv4 or IPv6 CIDR",
    });
  });
});

describe('normalizeRanges', () => {
  it('merges overlapping and adjacent ranges per family, IPv4 first', () => {
    const merged = normalizeRanges([
      range('fd00::2/127'),
      range('10.0.1.0/24'),
      range('10.0.0.0/24'),
      range('10.0.0.128/25'),
      range('fd00::/127'),
      range('10.0.3.0/24'),
    ]);
    expect(text(merged)).toEqual(['10.0.0.0-10.0.1.255', '10.0.3.0-10.0.3.255', 'fd00::-fd00::3']);
  });
});

describe('subtractRanges', () => {
  it('cuts holes in IPv4 ranges', () => {
    const out = subtractRanges(
      [range('10.0.0.0/8')],
      [range('10.1.0.0/16'), range('10.255.255.255')],
    );
    expect(text(out)).toEqual(['10.0.0.0-10.0.255.255', '10.2.0.0-10.255.255.254']);
  });

  it('removes a range entirely and handles the edges of the address space', () => {
    expect(subtractRanges([range('10.0.0.0/24')], [range('10.0.0.0/16')])).toEqual([]);
    const out = subtractRanges([range('0.0.0.0/0')], [range('0.0.0.0/32'), range('255.0.0.0/8')]);
    expect(text(out)).toEqual(['0.0.0.1-254.255.255.255']);
  });

  it('cuts holes in IPv6 ranges', () => {
    const out = subtractRanges(
      [range('2001:db8::/32')],
      [range('2001:db8:1::/48'), range('2001:db8::/127')],
    );
    expect(text(out)).toEqual([
      '2001:db8::2-2001:db8:0:ffff:ffff:ffff:ffff:ffff',
      '2001:db8:2::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff',
    ]);
  });

  it('never subtracts across families', () => {
    const out = subtractRanges([range('::/0'), range('10.0.0.0/31')], [range('0.0.0.0/0')]);
    expect(text(out)).toEqual(['::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);
  });
});
