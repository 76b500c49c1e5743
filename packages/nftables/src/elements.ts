// Set and map elements as nft lists them, reduced to a canonical form: owns the parsing of
// element values (addresses, prefixes, ranges, protocol names, concatenations) so that the
// fake and the agent's drift check compare what they give with what nft lists. Must not
// depend on a set's declaration beyond what the element itself carries.

/** One component of a key: a numeric interval, or an opaque value compared for equality. */
export type Part = { lo: bigint; hi: bigint } | { opaque: string };

/** The names nft 1.0.6 prints for protocol numbers in inet_proto keys (Debian). */
export const PROTO_NAMES: Readonly<Record<number, string>> = {
  1: 'icmp',
  2: 'igmp',
  6: 'tcp',
  17: 'udp',
  33: 'dccp',
  47: 'gre',
  50: 'esp',
  51: 'ah',
  58: 'ipv6-icmp',
  132: 'sctp',
  136: 'udplite',
};
const PROTO_NUMBERS: Record<string, number> = {
  ...Object.fromEntries(Object.entries(PROTO_NAMES).map(([n, name]) => [name, Number(n)])),
  icmpv6: 58,
};

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The key of an element: drops a map's value and the `{elem: {val, ...}}` wrapper. */
export function keyOfElement(e: unknown, isMap: boolean): unknown {
  let key = isMap && Array.isArray(e) ? e[0] : e;
  if (isRecord(key) && isRecord(key.elem)) key = key.elem.val;
  return key;
}

/** The components of an element's key as numeric intervals (prefix, range and value alike). */
export function keyParts(e: unknown, isMap: boolean): Part[] {
  const key = keyOfElement(e, isMap);
  const parts = isRecord(key) && Array.isArray(key.concat) ? key.concat : [key];
  return parts.map(partOf);
}

/**
 * A string equal for two elements exactly when nft treats them as the same element with the
 * same value: `10.0.0.0/24`, `{range: [10.0.0.0, 10.0.0.255]}` and 6 vs `tcp` compare equal.
 */
export function elementKey(e: unknown, isMap: boolean): string {
  const key = keyParts(e, isMap)
    .map((p) => ('opaque' in p ? p.opaque : p.lo === p.hi ? `${p.lo}` : `${p.lo}-${p.hi}`))
    .join(' . ');
  return isMap && Array.isArray(e) ? `${key} : ${JSON.stringify(e[1])}` : key;
}

export function partOf(v: unknown): Part {
  if (isRecord(v) && Array.isArray(v.range) && v.range.length === 2) {
    const lo = partOf(v.range[0]);
    const hi = partOf(v.range[1]);
    if ('lo' in lo && 'hi' in hi) return { lo: lo.lo, hi: hi.hi };
  }
  if (isRecord(v) && isRecord(v.prefix)) {
    const addr = scalar(v.prefix.addr);
    const len = Number(v.prefix.len);
    const bits = typeof v.prefix.addr === 'string' && v.prefix.addr.includes(':') ? 128 : 32;
    if (addr !== undefined && len >= 0 && len <= bits) {
      const host = (1n << BigInt(bits - len)) - 1n;
      return { lo: addr & ~host, hi: addr | host };
    }
  }
  const n = scalar(v);
  return n === undefined ? { opaque: JSON.stringify(v) } : { lo: n, hi: n };
}

function scalar(v: unknown): bigint | undefined {
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (typeof v !== 'string') return undefined;
  if (v in PROTO_NUMBERS) return BigInt(PROTO_NUMBERS[v]!);
  if (/^\d+\.\d+\.\d+\.\d+$/.test(v)) {
    return v.split('.').reduce((acc, o) => (acc << 8n) + BigInt(Number(o)), 0n);
  }
  if (v.includes(':')) return ipv6(v);
  return undefined;
}

function ipv6(v: string): bigint | undefined {
  const [head, tail, extra] = v.split('::');
  if (extra !== undefined) return undefined;
  const words = (s: string | undefined): string[] => (s ? s.split(':') : []);
  const h = words(head);
  const t = words(tail);
  const all = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  if (all.length !== 8 || !all.every((w) => /^[0-9a-fA-F]{1,4}$/.test(w))) return undefined;
  return all.reduce((acc, w) => (acc << 16n) + BigInt(Number.parseInt(w, 16)), 0n);
}
