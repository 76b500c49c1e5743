// A group's address ranges as nftables set elements, and back: the one place group contents
// become nft input (checked here, where they enter). Must not know rules, chains or services
// (render.ts) nor how elements reach the kernel (model.ts, update.ts).
import { isIPv4, isIPv6 } from 'node:net';
import { formatAddress } from '@bulkhead/policy';
import type { AddressRange, GroupUpdate } from '@bulkhead/proto';
import { AgentError } from './errors.js';
import type { SetModel } from './model.js';

export type Family = 4 | 6;

export function familyOf(addr: string): Family | undefined {
  if (isIPv4(addr)) return 4;
  if (isIPv6(addr)) return 6;
  return undefined;
}

function invalid(message: string): AgentError {
  return new AgentError('RULESET_INVALID', message);
}

// Group sets are concatenated (`addr . nf_proto`, with the family's constant `ipv4`/`ipv6`
// matched against `meta nfproto`) although only the address matters: for any element command
// nft 1.0.6 first lists every element of every non-concatenated interval set in the table (its
// userspace interval handling), so with a plain `ipv4_addr` interval set of 100k ranges adding
// 50 elements took 1.3 s and deleting 50 took 9 s; on a concatenated set (the kernel's pipapo
// backend) 30-50 ms (measured with nft -f). A constant second field loads faster than a range
// (100k: 1.2-1.3 s vs 1.6-2.1 s for `inet_proto` 0-255).
const NFPROTO: Record<Family, string> = { 4: 'ipv4', 6: 'ipv6' };

/**
 * A group's range as a set element (JSON text, the key of SetModel.elems) and its family.
 * Throws RULESET_INVALID for anything but two addresses of one family in order: the text
 * becomes nft input, so it is checked here, where it enters.
 */
export function rangeElement(r: AddressRange): { family: Family; text: string } {
  const family = familyOf(r.from);
  const single = r.from === r.to; // most ranges of a large list: one address checked once
  if (
    family === undefined ||
    (!single && (familyOf(r.to) !== family || !ordered(family, r.from, r.to)))
  ) {
    throw invalid(`${JSON.stringify(r.from)}-${JSON.stringify(r.to)} is not an address range`);
  }
  return element(family, r.from, single ? undefined : r.to);
}

/** A checked range's element; `to` undefined: one address. */
function element(family: Family, from: string, to: string | undefined) {
  // Built as text (a cold load has 100k of them); the addresses are quoted by JSON.stringify.
  const addr =
    to === undefined
      ? JSON.stringify(from)
      : `{"range":[${JSON.stringify(from)},${JSON.stringify(to)}]}`;
  return { family, text: `{"concat":[${addr},"${NFPROTO[family]}"]}` };
}

/**
 * A GroupUpdate's `added` or `removed` ranges as set elements, the text form then the packed
 * one (GroupUpdate.packed, proto/bulkhead/v1/agent.proto): the same element text either way.
 * Throws RULESET_INVALID for a range out of order or packed bytes not whole ranges.
 */
export function* updateElements(
  g: GroupUpdate,
  key: 'added' | 'removed',
): Generator<{ family: Family; text: string }> {
  for (const r of g[key]) yield rangeElement(r);
  const p = g.packed;
  if (!p) return;
  yield* packedElements(key === 'added' ? p.addedV4 : p.removedV4, 4);
  yield* packedElements(key === 'added' ? p.addedV6 : p.removedV6, 6);
}

function* packedElements(bytes: Buffer, family: Family) {
  const width = family === 4 ? 4 : 16;
  if (bytes.length % (2 * width) !== 0) {
    throw invalid(`packed IPv${family} ranges of ${bytes.length} bytes`);
  }
  // IPv4 (most ranges) as numbers and dotted text straight from the bytes; IPv6 as bigints.
  const read =
    family === 4
      ? (at: number) => bytes.readUInt32BE(at)
      : (at: number) => (bytes.readBigUInt64BE(at) << 64n) | bytes.readBigUInt64BE(at + 8);
  const text =
    family === 4
      ? (at: number) => `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`
      : (at: number) => formatAddress(6, read(at) as bigint);
  for (let at = 0; at < bytes.length; at += 2 * width) {
    const from = read(at);
    const to = read(at + width);
    if (from > to) throw invalid(`packed range ${text(at)}-${text(at + width)} is out of order`);
    yield element(family, text(at), from === to ? undefined : text(at + width));
  }
}

/**
 * Inverse of rangeElement (for persisting what the model holds). The addresses in its texts
 * hold no quote (isIPv4/isIPv6 accepted them), so the quotes split the text:
 * `{"concat":["A","ipv4"]}` or `{"concat":[{"range":["A","B"]},"ipv4"]}`. A JSON.parse of
 * each took ~1 s for 100k elements.
 */
export function elementRange(text: string): AddressRange {
  const q = text.split('"', 8);
  return q[3] === 'range' ? { from: q[5]!, to: q[7]! } : { from: q[3]!, to: q[3]! };
}

function ordered(family: Family, from: string, to: string): boolean {
  const value = (a: string) =>
    family === 4
      ? a.split('.').reduce((n, o) => n * 256n + BigInt(o), 0n)
      : BigInt(`0x${expand6(a)}`);
  return value(from) <= value(to);
}

function expand6(a: string): string {
  // isIPv6 already accepted it; an embedded IPv4 tail is rewritten as two groups.
  const v4 = a.match(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  const text = v4
    ? `${a.slice(0, -v4[0].length)}${((+v4[1]! << 8) | +v4[2]!).toString(16)}:${((+v4[3]! << 8) | +v4[4]!).toString(16)}`
    : a;
  const [head = '', tail] = text.split('::');
  const parts = (x: string) => (x === '' ? [] : x.split(':'));
  const h = parts(head);
  const t = tail === undefined ? [] : parts(tail);
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

/** The interval set of one family of a group; `elems` is what the group holds. */
export function groupSetModel(family: Family, elems: Map<string, string>): SetModel {
  return {
    kind: 'set',
    decl: { type: [family === 4 ? 'ipv4_addr' : 'ipv6_addr', 'nf_proto'], flags: ['interval'] },
    elems,
  };
}

/** A group's ranges as the elements of its two sets; throws RULESET_INVALID. */
export function groupElements(
  ranges: readonly AddressRange[],
): Record<Family, Map<string, string>> {
  const out = { 4: new Map<string, string>(), 6: new Map<string, string>() };
  for (const r of ranges) {
    const { family, text } = rangeElement(r);
    out[family].set(text, '');
  }
  return out;
}
