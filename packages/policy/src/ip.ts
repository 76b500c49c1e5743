// Address math on bigints, so IPv4 and IPv6 share one code path and ranges need no library.

import { PolicyError } from './errors.js';

export type Family = 4 | 6;

/** An inclusive range of addresses of one family. */
export interface IpRange {
  family: Family;
  from: bigint;
  to: bigint;
}

export interface IpAddress {
  family: Family;
  value: bigint;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

function parseIpv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    // No leading zeros: `010` is octal to some parsers and decimal to others.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseGroups(text: string): number[] | undefined {
  if (text === '') return [];
  const groups: number[] = [];
  const parts = text.split(':');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (i === parts.length - 1 && part.includes('.')) {
      const v4 = parseIpv4(part);
      if (v4 === undefined) return undefined;
      groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
      groups.push(Number.parseInt(part, 16));
    }
  }
  return groups;
}

function parseIpv6(text: string): bigint | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = parseGroups(halves[0]!);
  const tail = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  // An embedded IPv4 is only allowed at the very end.
  if (halves.length === 2 && halves[0]!.includes('.')) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

/** Parses an IPv4 or IPv6 address without prefix length or zone; undefined if invalid. */
export function parseAddress(text: string): IpAddress | undefined {
  if (typeof text !== 'string') return undefined;
  if (text.includes(':')) {
    const value = parseIpv6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseIpv4(text);
  return value === undefined ? undefined : { family: 4, value };
}

export type CidrResult =
  | { ok: true; range: IpRange; prefix: number }
  | { ok: false; reason: string };

/** Parses `addr/len` or a bare address (a host route). Host bits must be zero. */
export function parseCidr(text: string): CidrResult {
  if (typeof text !== 'string') return { ok: false, reason: 'must be a string' };
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const address = parseAddress(addrText);
  if (!address) return { ok: false, reason: `'${text}' is not a valid IPv4 or IPv6 CIDR` };
  const bits = BITS[address.family];
  let prefix = bits;
  if (slash >= 0) {
    const lenText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > bits) {
      return { ok: false, reason: `'${text}' has an invalid prefix length (0..${bits})` };
    }
    prefix = Number(lenText);
  }
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((address.value & hostMask) !== 0n) {
    const base = formatAddress(address.family, address.value & ~hostMask);
    return { ok: false, reason: `'${text}' has host bits set; did you mean ${base}/${prefix}?` };
  }
  return {
    ok: true,
    prefix,
    range: { family: address.family, from: address.value, to: address.value | hostMask },
  };
}

/** Like parseCidr, for input that validation has already accepted. */
export function cidrRange(text: string): IpRange {
  const result = parseCidr(text);
  if (!result.ok) throw new PolicyError('POLICY_INVALID', result.reason);
  return result.range;
}

function formatIpv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

/** Canonical text: IPv4 dotted quad, IPv6 as RFC 5952 (lowercase, longest zero run as `::`). */
export function formatAddress(family: Family, value: bigint): string {
  if (family === 4) return formatIpv4(value);
  // RFC 5952 section 5: IPv4-mapped addresses keep the dotted quad.
  if (value >> 32n === 0xffffn) return `::ffff:${formatIpv4(value & 0xffffffffn)}`;
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((value >> shift) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

export function compareRanges(a: IpRange, b: IpRange): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.from !== b.from) return a.from < b.from ? -1 : 1;
  if (a.to !== b.to) return a.to < b.to ? -1 : 1;
  return 0;
}

/** Sorts (IPv4 first) and merges overlapping and adjacent ranges. */
export function normalizeRanges(ranges: readonly IpRange[]): IpRange[] {
  const sorted = [...ranges].sort(compareRanges);
  const out: IpRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.from <= last.to + 1n) {
      if (r.to > last.to) last.to = r.to;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/** `ranges` minus `minus`, normalized. */
export function subtractRanges(ranges: readonly IpRange[], minus: readonly IpRange[]): IpRange[] {
  const cut = normalizeRanges(minus);
  const out: IpRange[] = [];
  for (const r of normalizeRanges(ranges)) {
    let from = r.from;
    for (const m of cut) {
      if (m.family !== r.family || m.to < from || m.from > r.to) continue;
      if (m.from > from) out.push({ family: r.family, from, to: m.from - 1n });
      from = m.to + 1n;
      if (from > r.to) break;
    }
    if (from <= r.to) out.push({ family: r.family, from, to: r.to });
  }
  return out;
}

/** True if `inner` lies entirely inside `outer`. */
export function rangeContains(outer: IpRange, inner: IpRange): boolean {
  return outer.family === inner.family && outer.from <= inner.from && inner.to <= outer.to;
}

export function rangesContain(ranges: readonly IpRange[], address: IpAddress): boolean {
  return ranges.some(
    (r) => r.family === address.family && r.from <= address.value && address.value <= r.to,
  );
}
