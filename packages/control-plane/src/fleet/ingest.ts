// Telemetry ingest queue: what agents sent, waiting for SQLite, in bounded memory. A stream is
// paused from the moment one of its messages is offered until that message is written, so each
// stream has at most one message here, its messages (hello, ack, telemetry) are still handled
// in order, and while the queue is full grpc-js stops reading the waiting streams: HTTP/2 flow
// control makes the agents' writes wait, and they keep aggregating into their own bounded
// buffers. The queue is written in slices, several messages per transaction, one slice per turn
// of the event loop, so /healthz and the other streams are served between slices. A slice is
// sized to take about `sliceMs`, from what the last ones cost a record: the listener accepts one
// connection per turn (libuv), so a long slice would starve a reconnecting fleet.
// Must not check or store telemetry itself: `write` (fleet) does, inside one transaction.
import type { Telemetry } from '@bulkhead/proto';

/** The part of a grpc-js server stream the queue uses: stop and restart reading it. */
export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

export interface IngestItem {
  agentId: string;
  telemetry: Telemetry;
}

/** What a written item came to: counted (true), already counted (false), or refused. */
export type IngestResult = { added: boolean } | { error: unknown };

export interface TelemetryIngestOptions {
  /** Writes items in one transaction; one result per item, in order. */
  write(items: IngestItem[]): IngestResult[];
  /** Records (counters + flows + events + 1) queued at most. A larger message waits for an empty queue. */
  capacity?: number;
  /** Records written per slice (one transaction) at most; a slice holds at least one message. */
  sliceRecords?: number;
  /** About how long a slice may take. */
  sliceMs?: number;
  /** The clock slices are timed with (ms). */
  now?: () => number;
}

export interface TelemetryIngest {
  /** Queues a message from `source`, paused until the message is written; resolves then. */
  offer(source: Pausable, item: IngestItem): Promise<boolean>;
  /** Records queued now (never above the capacity, unless one message alone is). */
  readonly queued: number;
  /** Messages waiting for room in the queue. */
  readonly waiting: number;
  /** Resolves once nothing is queued or waiting. */
  idle(): Promise<void>;
}

export const DEFAULT_INGEST_CAPACITY = 50_000;
export const DEFAULT_SLICE_RECORDS = 10_000;
export const DEFAULT_SLICE_MS = 10;

interface Entry extends IngestItem {
  cost: number;
  source: Pausable;
  settle(r: IngestResult): void;
}

const costOf = (t: Telemetry) =>
  1 + t.counters.length + (t.flows?.length ?? 0) + (t.events?.length ?? 0);

export function createTelemetryIngest(options: TelemetryIngestOptions): TelemetryIngest {
  const capacity = options.capacity ?? DEFAULT_INGEST_CAPACITY;
  const maxSliceRecords = options.sliceRecords ?? DEFAULT_SLICE_RECORDS;
  const sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  const now = options.now ?? (() => performance.now());
  // What a record costs to write, smoothed over the last slices; a guess (10 µs) until then.
  let msPerRecord = 0.01;
  const queue: Entry[] = [];
  const waiting: Entry[] = [];
  let queued = 0;
  let scheduled = false;
  const idlers: (() => void)[] = [];

  const fits = (e: Entry) => queued === 0 || queued + e.cost <= capacity;

  function admit(e: Entry): void {
    queue.push(e);
    queued += e.cost;
    if (!scheduled) {
      scheduled = true;
      setImmediate(writeSlice);
    }
  }

  function writeSlice(): void {
    scheduled = false;
    const slice: Entry[] = [];
    let records = 0;
    const sliceRecords = Math.max(1, Math.min(maxSliceRecords, Math.floor(sliceMs / msPerRecord)));
    while (queue.length > 0 && (slice.length === 0 || records + queue[0]!.cost <= sliceRecords)) {
      const e = queue.shift()!;
      slice.push(e);
      records += e.cost;
    }
    let results: IngestResult[];
    const t0 = now();
    try {
      results = options.write(slice);
    } catch (error) {
      results = slice.map(() => ({ error }));
    }
    msPerRecord = 0.7 * msPerRecord + 0.3 * ((now() - t0) / records);
    queued -= records;
    slice.forEach((e, i) => {
      e.settle(results[i] ?? { error: new Error('not written') });
      e.source.resume();
    });
    // Waiting messages go in arrival order.
    while (waiting.length > 0 && fits(waiting[0]!)) admit(waiting.shift()!);
    if (queue.length === 0 && waiting.length === 0) {
      for (const fn of idlers.splice(0)) fn();
    } else if (!scheduled && queue.length > 0) {
      scheduled = true;
      setImmediate(writeSlice);
    }
  }

  return {
    offer(source, item) {
      return new Promise<boolean>((resolve, reject) => {
        const e: Entry = {
          ...item,
          cost: costOf(item.telemetry),
          source,
          settle: (r) => ('error' in r ? reject(r.error) : resolve(r.added)),
        };
        source.pause();
        if (waiting.length === 0 && fits(e)) admit(e);
        else waiting.push(e);
      });
    },
    get queued() {
      return queued;
    },
    get waiting() {
      return waiting.length;
    },
    idle() {
      if (queue.length === 0 && waiting.length === 0) return Promise.resolve();
      return new Promise((resolve) => idlers.push(resolve));
    },
  };
}
