// A Sync stream for tests that speak to a real control plane as an agent would (not part of the
// public API).

import { formatAddress } from '@bulkhead/policy';
import type {
  GroupUpdate,
  PolicyUpdate,
  SyncRequest,
  SyncResponse,
  Welcome,
} from '@bulkhead/proto';
import { SyncResponse as SyncResponseCodec } from '@bulkhead/proto';
import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';

/** One update as the agent applies it: its chunks' groups together, and each chunk's size. */
export interface ReceivedUpdate extends PolicyUpdate {
  /** Encoded size of each chunk (SyncResponse bytes, as on the wire). */
  chunkBytes: number[];
}

/** A Sync stream with a queue of what arrived, so a test can await the next message. */
export class SyncSession {
  private readonly received: SyncResponse[] = [];
  /** Welcomes, the answer to every Hello, kept apart so that next() yields updates. */
  readonly welcomes: Welcome[] = [];
  /** Seqs of the TelemetryAcks, kept apart too. */
  readonly telemetryAcks: number[] = [];
  private waiters: Array<() => void> = [];
  readonly error: Promise<ServiceError>;

  /**
   * `packed`: the Hellos say `packed_ranges`, so groups arrive in the packed form; `acks`: they
   * ask for telemetry acks.
   */
  constructor(
    readonly stream: ClientDuplexStream<SyncRequest, SyncResponse>,
    readonly packed = false,
    readonly acks = false,
  ) {
    stream.on('data', (msg: SyncResponse) => {
      if (msg.welcome) this.welcomes.push(msg.welcome);
      else if (msg.telemetryAck) this.telemetryAcks.push(msg.telemetryAck.seq);
      else this.received.push(msg);
      this.wake();
    });
    this.error = new Promise((resolve) => stream.on('error', resolve));
    stream.on('error', () => this.wake());
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** How many messages (other than Welcomes) wait unread. */
  get pending(): number {
    return this.received.length;
  }

  /** The next message: one chunk of an update. */
  async nextMessage(): Promise<SyncResponse> {
    while (this.received.length === 0) {
      await Promise.race([
        new Promise<void>((r) => this.waiters.push(r)),
        this.error.then((e) => Promise.reject(e)),
      ]);
    }
    return this.received.shift()!;
  }

  /** The next whole update (its chunks up to `last`), checking they agree on the header. */
  async next(): Promise<ReceivedUpdate> {
    const chunks: SyncResponse[] = [];
    do chunks.push(await this.nextMessage());
    while (!chunks.at(-1)!.update!.last);
    const updates = chunks.map((c) => c.update!);
    const [first] = updates;
    for (const u of updates) {
      if (u.hash !== first!.hash || u.baseHash !== first!.baseHash || u.full !== first!.full) {
        throw new Error('chunks of one update disagree on their header');
      }
      if (u !== first && u.ruleSet) throw new Error('rule_set in a later chunk');
    }
    return {
      ...first!,
      last: true,
      groups: updates.flatMap((u) => u.groups),
      chunkBytes: chunks.map((c) => SyncResponseCodec.encode(c).finish().length),
    };
  }

  send(msg: SyncRequest) {
    this.stream.write(msg);
  }

  hello(appliedHash = '', addresses: string[] = []) {
    this.send({
      hello: {
        appliedRevision: 0,
        appliedHash,
        hostname: '',
        addresses,
        agentVersion: 't',
        packedRanges: this.packed,
        telemetryAcks: this.acks,
      },
    });
  }

  /**
   * Messages on one stream are handled in order, so a Hello claiming nothing and holding
   * nothing, and the full sync it brings back, proves that everything sent before it was
   * processed. Updates that arrive before that full sync are skipped.
   */
  async barrier(): Promise<ReceivedUpdate> {
    this.hello();
    for (;;) {
      const u = await this.next();
      if (u.full) return u;
    }
  }
}

/** Group contents after applying `update`'s group changes to `groups` (a copy). */
export function applyGroups(
  groups: ReadonlyMap<string, Set<string>>,
  updates: readonly GroupUpdate[],
): Map<string, Set<string>> {
  const out = new Map([...groups].map(([id, r]) => [id, new Set(r)]));
  for (const g of updates) {
    if (g.deleted) {
      out.delete(g.id);
      continue;
    }
    const ranges = g.created && !out.has(g.id) ? new Set<string>() : out.get(g.id);
    if (!ranges) throw new Error(`update of unknown group ${g.id}`);
    for (const r of rangesOf(g, 'removed')) {
      if (!ranges.delete(r)) throw new Error(`${g.id}: removed range absent`);
    }
    for (const r of rangesOf(g, 'added')) ranges.add(r);
    out.set(g.id, ranges);
  }
  return out;
}

/** A GroupUpdate's added or removed ranges as `from-to` texts, from either form. */
export function rangesOf(g: GroupUpdate, key: 'added' | 'removed'): string[] {
  const out = g[key].map((r) => `${r.from}-${r.to}`);
  const p = g.packed;
  for (const [bytes, family] of p
    ? ([
        [key === 'added' ? p.addedV4 : p.removedV4, 4],
        [key === 'added' ? p.addedV6 : p.removedV6, 6],
      ] as const)
    : []) {
    const width = family === 4 ? 4 : 16;
    const read = (at: number) =>
      formatAddress(family, BigInt(`0x${bytes.subarray(at, at + width).toString('hex')}`));
    for (let at = 0; at < bytes.length; at += 2 * width) {
      out.push(`${read(at)}-${read(at + width)}`);
    }
  }
  return out;
}
