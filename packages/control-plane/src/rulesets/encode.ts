// Encoding PolicyUpdates for the Sync stream (wiring contract 3): an update is split into
// chunks of at most MAX_MESSAGE bytes, a large group across several chunks. Group parts, and a
// rule set's rules, are encoded once and shared by every agent that gets them; only the small
// header (hashes, revision, flags; the rule set's workload, hash and modes) is encoded per agent,
// straight into the message's one buffer, which also holds the gRPC frame prefix so that the
// message is copied once on its way to the socket. Produces encoded SyncResponse bytes; must not
// decide what an agent gets.
import { type IpRange, toAddressRange } from '@bulkhead/policy';
import {
  type AddressRange,
  type GroupRule,
  GroupRuleSet,
  type GroupUpdate,
  PolicyUpdate,
} from '@bulkhead/proto';

/** No message on the stream is larger (the contract's 1 MiB). */
export const MAX_MESSAGE = 1 << 20;
/**
 * Room in every chunk for the per-agent header, the SyncResponse wrapper and the rule set's own
 * fields (workload name <= 63 bytes, hash, revision, modes): ~300 bytes at most.
 */
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

/**
 * How an agent reads group ranges: `packed` (GroupUpdate.packed, each range's ends as bytes)
 * when its Hello said `packed_ranges`, else `text` (AddressRange messages), as agents before
 * the packed form.
 */
export type RangeForm = 'packed' | 'text';

const NO_BYTES = Buffer.alloc(0);

const part = (g: GroupUpdate) => PolicyUpdate.encode({ ...EMPTY, groups: [g] }).finish();

/** Bytes of one range in the packed form: its two ends. */
const packedSize = (r: IpRange) => (r.family === 4 ? 8 : 32);
const LOW_64 = (1n << 64n) - 1n;

/** The ranges of one family, packed: each range's two ends in network byte order. */
function pack(ranges: readonly IpRange[], family: 4 | 6): Buffer {
  const of = ranges.filter((r) => r.family === family);
  if (of.length === 0) return NO_BYTES;
  const out = Buffer.allocUnsafe(of.length * (family === 4 ? 8 : 32));
  let at = 0;
  for (const r of of) {
    for (const v of [r.from, r.to]) {
      if (family === 4) at = out.writeUInt32BE(Number(v), at);
      else at = out.writeBigUInt64BE(v & LOW_64, out.writeBigUInt64BE(v >> 64n, at));
    }
  }
  return out;
}

/**
 * One group's change as parts, in `form`, its ranges split so that each part fits a chunk;
 * `created` and `deleted` ride on the first part only.
 */
export function encodeGroup(
  change: {
    id: string;
    created?: boolean;
    deleted?: boolean;
    added?: readonly IpRange[];
    removed?: readonly IpRange[];
  },
  form: RangeForm,
): GroupParts {
  const out: GroupParts = [];
  let current = { added: [] as IpRange[], removed: [] as IpRange[], size: 0 };
  const flush = () => {
    const { added, removed } = current;
    const first = out.length === 0;
    out.push(
      part({
        id: change.id,
        created: first && change.created === true,
        deleted: first && change.deleted === true,
        ...(form === 'packed'
          ? {
              added: [],
              removed: [],
              packed: {
                addedV4: pack(added, 4),
                addedV6: pack(added, 6),
                removedV4: pack(removed, 4),
                removedV6: pack(removed, 6),
              },
            }
          : { added: added.map(toAddressRange), removed: removed.map(toAddressRange) }),
      }),
    );
    current = { added: [], removed: [], size: 0 };
  };
  for (const key of ['removed', 'added'] as const) {
    for (const r of change[key] ?? []) {
      const size = form === 'packed' ? packedSize(r) : rangeField(toAddressRange(r));
      if (current.size + size > PART_RANGES) flush();
      current[key].push(r);
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
 * The `rules` fields of a GroupRuleSet, encoded once per rules array: rules arrays are shared
 * by the workloads whose rules are the same, and frozen.
 */
const encodedRules = new WeakMap<readonly GroupRule[], Uint8Array>();
function rulesOf(rules: readonly GroupRule[]): Uint8Array {
  let bytes = encodedRules.get(rules);
  if (!bytes) {
    bytes = GroupRuleSet.encode({ ...EMPTY_RULE_SET, rules: rules as GroupRule[] }).finish();
    encodedRules.set(rules, bytes);
  }
  return bytes;
}

const EMPTY_RULE_SET: GroupRuleSet = {
  workloadId: '',
  revision: 0,
  hash: '',
  ingressMode: 0,
  egressMode: 0,
  rules: [],
};

/**
 * The bodies of an update's messages: the rule set's rules (if any, in the first) and the group
 * parts, packed into chunks that fit a message with its header. Shared by every agent that gets
 * the same change; each agent's own fields (header, the rule set's workload, hash and modes) are
 * written by `frameUpdate`.
 */
export function encodeBodies(
  rules: readonly GroupRule[] | undefined,
  parts: readonly Uint8Array[],
): Body[] {
  const first = rules && rulesOf(rules);
  const bodies: Body[] = [{ rules: first, parts: [], length: first?.length ?? 0 }];
  for (const p of parts) {
    let body = bodies.at(-1)!;
    if (body.length > 0 && body.length + p.length > CHUNK_BODY) {
      body = { parts: [], length: 0 };
      bodies.push(body);
    }
    body.parts.push(p);
    body.length += p.length;
  }
  return bodies;
}

/**
 * One message's body: encoded fields, copied once, behind the header, into the message. `rules`:
 * the rule set's encoded rules (first chunk of an update that carries the rule set).
 */
export interface Body {
  rules?: Uint8Array;
  parts: Uint8Array[];
  length: number;
}

/**
 * Encoded SyncResponse messages (`update`), each <= MAX_MESSAGE: `bodies` behind one agent's
 * header; `ruleSet` (required when the first body has rules) gives the rule set's own fields.
 */
export function frameUpdate(
  header: UpdateHeader,
  bodies: readonly Body[],
  ruleSet?: GroupRuleSet,
): Buffer[] {
  return bodies.map((body, i) => frame(header, i === bodies.length - 1, body, ruleSet));
}

/**
 * gRPC's length prefix of a message (compressed flag, 4-byte big-endian length): every message
 * here is written behind one, in the same allocation, so the Sync call's write path can hand
 * grpc-js the framed bytes and nothing is copied again.
 */
const GRPC_PREFIX = 5;
/** On each message made here, its frame (a property: a WeakMap entry cost 10x more per agent). */
const FRAME = Symbol('grpc frame');
type Framed = Buffer & { [FRAME]?: Buffer };

/** The gRPC frame (prefix + message, one allocation) of a message `frameUpdate` made, else undefined. */
export function grpcFrameOf(message: Uint8Array): Buffer | undefined {
  return (message as Framed)[FRAME];
}

const textSize = (s: string) => {
  const n = Buffer.byteLength(s);
  return n === 0 ? 0 : 1 + varintSize(n) + n;
};
const intSize = (n: number) => (n !== 0 ? 1 + varintSize(n) : 0);

/**
 * SyncResponse field 3 (`update`) around PolicyUpdate fields 1-5 (and field 6, the rule set:
 * its workload, revision, hash and modes, then its shared encoded rules), written by hand into
 * one buffer behind the gRPC prefix (the per-agent part of every message, so the one encoded
 * most often), then `body`. ts-proto's encoder gives the same bytes (the tests decode them with
 * it). Revisions and modes are below 2^31.
 */
function frame(h: UpdateHeader, last: boolean, body: Body, ruleSet?: GroupRuleSet): Buffer {
  const head =
    textSize(h.baseHash) +
    textSize(h.hash) +
    intSize(h.revision) +
    (h.full ? 2 : 0) +
    (last ? 2 : 0);
  let ruleSetLength = 0;
  if (body.rules) {
    if (!ruleSet) throw new Error('frameUpdate: a body with rules needs its rule set');
    ruleSetLength =
      textSize(ruleSet.workloadId) +
      intSize(h.revision) +
      textSize(ruleSet.hash) +
      intSize(ruleSet.ingressMode) +
      intSize(ruleSet.egressMode) +
      body.rules.length;
  }
  // body.length counts the rules, which the rule set field holds.
  const ruleSetField = body.rules ? 1 + varintSize(ruleSetLength) + ruleSetLength : 0;
  const update = head + ruleSetField + body.length - (body.rules?.length ?? 0);
  const size = 1 + varintSize(update) + update;
  const out = Buffer.allocUnsafe(GRPC_PREFIX + size);
  out[0] = 0;
  out.writeUInt32BE(size, 1);
  let at = GRPC_PREFIX;
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
  const number = (tag: number, n: number) => {
    if (n === 0) return;
    out[at++] = tag;
    int(n);
  };
  const bytes = (b: Uint8Array) => {
    out.set(b, at);
    at += b.length;
  };
  out[at++] = 26;
  int(update);
  text(10, h.baseHash);
  text(18, h.hash);
  number(24, h.revision);
  if (h.full) number(32, 1);
  if (last) number(40, 1);
  if (body.rules && ruleSet) {
    out[at++] = 50;
    int(ruleSetLength);
    text(10, ruleSet.workloadId);
    number(16, h.revision);
    text(26, ruleSet.hash);
    number(32, ruleSet.ingressMode);
    number(40, ruleSet.egressMode);
    bytes(body.rules);
  }
  for (const p of body.parts) bytes(p);
  const message: Framed = out.subarray(GRPC_PREFIX);
  message[FRAME] = out;
  return message;
}
