// Encoding PolicyUpdates for the Sync stream (wiring contract 3): an update is split into
// chunks of at most MAX_MESSAGE bytes, a large group across several chunks. Group parts are
// encoded once and shared by every agent that gets them; only the small header (hashes,
// revision, flags) is encoded per agent, straight into the message's one buffer. Produces
// encoded SyncResponse bytes; must not decide what an agent gets.
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

const varintSize = (n: number) =>
  n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
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

/**
 * The bodies of an update's messages: the rule set (if any) and the group parts, packed into
 * chunks that fit a message with its header. Shared by every agent that gets the same change.
 */
export function encodeBodies(
  ruleSet: GroupRuleSet | undefined,
  revision: number,
  parts: readonly Uint8Array[],
): Body[] {
  const first = ruleSet
    ? PolicyUpdate.encode({ ...EMPTY, ruleSet: { ...ruleSet, revision } }).finish()
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
  return chunks.map((body) => ({ parts: body, length: body.reduce((n, b) => n + b.length, 0) }));
}

/** One message's body: encoded fields, copied once, behind the header, into the message. */
export interface Body {
  parts: Uint8Array[];
  length: number;
}

/** Encoded SyncResponse messages (`update`), each <= MAX_MESSAGE: `bodies` behind one agent's header. */
export function frameUpdate(header: UpdateHeader, bodies: readonly Body[]): Buffer[] {
  return bodies.map((body, i) => frame(header, i === bodies.length - 1, body));
}

/** `encodeBodies` then `frameUpdate`, for an update only one agent gets. */
export function encodeUpdate(
  header: UpdateHeader,
  ruleSet: GroupRuleSet | undefined,
  parts: readonly Uint8Array[],
): Buffer[] {
  return frameUpdate(header, encodeBodies(ruleSet, header.revision, parts));
}

const textSize = (s: string) => {
  const n = Buffer.byteLength(s);
  return n === 0 ? 0 : 1 + varintSize(n) + n;
};

/**
 * SyncResponse field 3 (`update`) around PolicyUpdate fields 1-5, written by hand into one
 * buffer (the per-agent part of every message, so the one encoded most often), then `body`.
 * ts-proto's encoder gives the same bytes (the tests decode them with it).
 */
function frame(h: UpdateHeader, last: boolean, body: Body): Buffer {
  const head =
    textSize(h.baseHash) +
    textSize(h.hash) +
    (h.revision !== 0 ? 1 + varintSize(h.revision) : 0) +
    (h.full ? 2 : 0) +
    (last ? 2 : 0);
  const length = head + body.length;
  const out = Buffer.allocUnsafe(1 + varintSize(length) + length);
  let at = 0;
  const int = (n: number) => {
    for (; n >= 0x80; n >>>= 7) out[at++] = (n & 0x7f) | 0x80;
    out[at++] = n;
  };
  const text = (tag: number, s: string) => {
    if (s === '') return;
    out[at++] = tag;
    int(Buffer.byteLength(s));
    at += out.write(s, at);
  };
  out[at++] = 26;
  int(length);
  text(10, h.baseHash);
  text(18, h.hash);
  if (h.revision !== 0) {
    out[at++] = 24;
    int(h.revision);
  }
  const flag = (tag: number) => {
    out[at++] = tag;
    out[at++] = 1;
  };
  if (h.full) flag(32);
  if (last) flag(40);
  for (const p of body.parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
