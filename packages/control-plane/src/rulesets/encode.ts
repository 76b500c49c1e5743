// Encoding PolicyUpdates for the Sync stream (wiring contract 3): an update is split into
// chunks of at most MAX_MESSAGE bytes, a large group across several chunks. Group parts are
// encoded once and shared by every agent that gets them; only the small header (hashes,
// revision, flags) is encoded per agent. Produces encoded SyncResponse bytes; must not decide
// what an agent gets.
import { type IpRange, toAddressRange } from '@bulkhead/policy';
import { type AddressRange, type GroupRuleSet, PolicyUpdate } from '@bulkhead/proto';

/** No message on the stream is larger (the contract's 1 MiB). */
export const MAX_MESSAGE = 1 << 20;
/** Room in every chunk for the per-agent header and the SyncResponse wrapper. */
const HEADER_ROOM = 1024;
/** Most bytes of group parts (and the rule set) in one chunk. */
const CHUNK_BODY = MAX_MESSAGE - HEADER_ROOM;
/** Most bytes of one group part: a chunk holds at least one whatever the group id (<= 300). */
const PART_RANGES = CHUNK_BODY - 1024;

const EMPTY: PolicyUpdate = {
  baseHash: '',
  hash: '',
  revision: 0,
  full: false,
  last: false,
  ruleSet: undefined,
  groups: [],
};

const varintSize = (n: number) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4);
function varint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n >>>= 7) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return out;
}
/** Bytes of a string field with a one-byte tag (ASCII text: address ranges). */
const stringField = (s: string) => (s.length === 0 ? 0 : 1 + varintSize(s.length) + s.length);
function rangeField(r: AddressRange): number {
  const inner = stringField(r.from) + stringField(r.to);
  return 1 + varintSize(inner) + inner;
}

/** Encoded `groups` fields of a PolicyUpdate (tag + length + GroupUpdate), one per part. */
export type GroupParts = Uint8Array[];

const part = (g: PolicyUpdate['groups'][number]) =>
  PolicyUpdate.encode({ ...EMPTY, groups: [g] }).finish();

/**
 * One group's change as parts, its ranges split so that each part fits a chunk; `created`
 * and `deleted` ride on the first part only.
 */
export function encodeGroup(change: {
  id: string;
  created?: boolean;
  deleted?: boolean;
  added?: readonly IpRange[];
  removed?: readonly IpRange[];
}): GroupParts {
  const out: GroupParts = [];
  let current = { added: [] as AddressRange[], removed: [] as AddressRange[], size: 0 };
  const flush = () => {
    out.push(
      part({
        id: change.id,
        created: out.length === 0 && change.created === true,
        deleted: out.length === 0 && change.deleted === true,
        added: current.added,
        removed: current.removed,
      }),
    );
    current = { added: [], removed: [], size: 0 };
  };
  for (const key of ['removed', 'added'] as const) {
    for (const r of change[key] ?? []) {
      const a = toAddressRange(r);
      const size = rangeField(a);
      if (current.size + size > PART_RANGES) flush();
      current[key].push(a);
      current.size += size;
    }
  }
  if (out.length === 0 || current.size > 0) flush();
  return out;
}

export interface UpdateHeader {
  baseHash: string;
  hash: string;
  revision: number;
  full: boolean;
}

/** Encoded SyncResponse messages (`update`) carrying one update, each <= MAX_MESSAGE. */
export function encodeUpdate(
  header: UpdateHeader,
  ruleSet: GroupRuleSet | undefined,
  parts: readonly Uint8Array[],
): Buffer[] {
  const first = ruleSet
    ? PolicyUpdate.encode({ ...EMPTY, ruleSet: { ...ruleSet, revision: header.revision } }).finish()
    : undefined;
  const chunks: Uint8Array[][] = [first ? [first] : []];
  let size = first?.length ?? 0;
  for (const p of parts) {
    if (size > 0 && size + p.length > CHUNK_BODY) {
      chunks.push([]);
      size = 0;
    }
    chunks.at(-1)!.push(p);
    size += p.length;
  }
  return chunks.map((body, i) => {
    const head = encodeHeader(header, i === chunks.length - 1);
    const length = body.reduce((n, b) => n + b.length, head.length);
    // SyncResponse field 3 (`update`), length-delimited, around the PolicyUpdate's fields.
    const prefix = Buffer.from([26, ...varint(length)]);
    return Buffer.concat([prefix, head, ...body], prefix.length + length);
  });
}

/**
 * PolicyUpdate fields 1-5 by hand (the per-agent part of every message, so the one encoded
 * most often); ts-proto's encoder gives the same bytes (the tests decode them with it).
 */
function encodeHeader(h: UpdateHeader, last: boolean): Buffer {
  const out: number[] = [];
  const text = (tag: number, s: string) => {
    if (s === '') return;
    const bytes = Buffer.from(s);
    out.push(tag, ...varint(bytes.length), ...bytes);
  };
  text(10, h.baseHash);
  text(18, h.hash);
  if (h.revision !== 0) out.push(24, ...varint(h.revision));
  if (h.full) out.push(32, 1);
  if (last) out.push(40, 1);
  return Buffer.from(out);
}
