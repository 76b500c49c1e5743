import type { FlowVerdict } from '@bulkhead/api';
import { formatAddress, PORT_PROTOCOL_NUMBERS, parseAddress } from '@bulkhead/policy';
import type Database from 'better-sqlite3';

// Flows live in two tables: `flows`, one row per distinct dependency (reporting workload,
// direction, src, dst, protocol, port, verdict, rule) with lifetime totals, and `flow_hours`,
// the same key per hour, for time-window questions. Buckets age out after the retention; a
// dependency row only when it was not seen for that long, so a weekly job is never forgotten
// while the table stays bounded by the row cap. The tables' schema is in store/migrations.ts.
// Each write stamps the row with a sequence number, so a reader that keeps what it read (impact
// analysis) asks only for the rows written since; removals are logged in memory with a number of
// the same sequence (the ends of distinct flows they took rows from, or a deleted workload), so
// that such a reader takes them out and reads the rows left of those ends. The log is bounded:
// past its size, or after a removal too large to log, a reader that kept rows from before reads
// everything again.

export type FlowDirection = 'ingress' | 'egress';

/** A stored dependency; connections and bytes are the window's when the query had one. */
export interface FlowRow {
  workload: string;
  direction: FlowDirection;
  src: string;
  dst: string;
  protocol: number;
  port: number;
  verdict: FlowVerdict;
  ruleId: string;
  connections: number;
  bytes: number;
  firstSeen: string;
  lastSeen: string;
}

/** What identifies a dependency of a workload, and when it was first seen. */
export type FlowDependency = Pick<
  FlowRow,
  'direction' | 'src' | 'dst' | 'protocol' | 'port' | 'firstSeen'
>;

/** Both lists are ORed: the reporting workload is one of `workloads`, or src or dst is one of `addresses`. */
export interface FlowMatch {
  workloads: string[];
  addresses: string[];
}

export interface FlowQuery {
  /** Every match must hold (AND of ORs). */
  match?: FlowMatch[];
  direction?: FlowDirection;
  verdict?: FlowVerdict;
  protocol?: number;
  port?: number;
  /** ISO; the flow has an hourly bucket overlapping [since, until], counts are those buckets'. */
  since?: string;
  until?: string;
  /** ISO; first seen at or after. */
  newSince?: string;
  /** Default: no limit. */
  limit?: number;
}

/** A time window of flow questions (FlowQuery's). */
export type FlowWindow = Pick<FlowQuery, 'since' | 'until'>;

/** A flow row as impact analysis reads it (`ObservedFlow` of @bulkhead/policy). */
export type ObservedRow = Pick<
  FlowRow,
  'src' | 'dst' | 'protocol' | 'port' | 'workload' | 'direction' | 'connections' | 'lastSeen'
>;

/** An `ObservedRow` as the driver reads it raw, its columns in that order. */
type ObservedColumns = [
  ObservedRow['src'],
  ObservedRow['dst'],
  ObservedRow['protocol'],
  ObservedRow['port'],
  ObservedRow['workload'],
  ObservedRow['direction'],
  ObservedRow['connections'],
  ObservedRow['lastSeen'],
];

/**
 * Where the rows stand: `seq` of the last write or removal; removals before `loggedSince` are
 * no longer logged, so a reader that kept the rows as of an earlier `seq` reads them all again.
 * Both only grow.
 */
export interface FlowChanges {
  seq: number;
  loggedSince: number;
}

/** The rows of an end of a distinct flow were removed (some or all), or those of a workload. */
export type RemovedFlows =
  | ({ removed: 'end' } & Pick<
      FlowRow,
      'workload' | 'direction' | 'src' | 'dst' | 'protocol' | 'port'
    >)
  | { removed: 'workload'; workload: string };

/** What `changedSince` tells: a removal, or a row (see there). */
export type ChangedRow = ObservedRow | RemovedFlows;

export interface FlowLimits {
  retentionDays: number;
  maxRows: number;
}

export interface PruneResult {
  buckets: number;
  /** Rows not seen within the retention. */
  expired: number;
  /** Rows evicted (oldest last_seen first) to stay under the row cap. */
  evicted: number;
}

export const DEFAULT_FLOW_RETENTION_DAYS = 35;
export const DEFAULT_MAX_FLOW_ROWS = 1_000_000;

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** Start of the UTC hour holding an ISO time, as the bucket key. */
export function hourOf(iso: string): string {
  const ms = Date.parse(iso);
  return new Date(ms - (((ms % HOUR_MS) + HOUR_MS) % HOUR_MS)).toISOString();
}

/** A dotted quad already in canonical form (no leading zeros), the common case at ingest. */
const CANONICAL_IPV4 =
  /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** RFC 5952 / dotted quad, or undefined when `text` is not an IP address. */
export function canonicalOrUndefined(text: string): string | undefined {
  // Telemetry spends more on parsing addresses than on any other check: skip the parse
  // when the text is its own canonical form.
  if (CANONICAL_IPV4.test(text)) return text;
  const a = parseAddress(text);
  return a ? formatAddress(a.family, a.value) : undefined;
}

/** RFC 5952 / dotted quad, so that SQL equality finds an address however an agent spelled it. */
export function canonicalAddress(text: string): string {
  return canonicalOrUndefined(text) ?? text;
}

type Row = Record<string, unknown>;
type RowKey = Omit<Extract<RemovedFlows, { removed: 'end' }>, 'removed'>;

/** The protocols with ports, as an SQL list. */
const PORTED = PORT_PROTOCOL_NUMBERS.join(', ');
// A row of `from` (flows as f) with, as `connections`, the total of its end (the reporting
// workload and direction) for its distinct flow: the rows of the same src, dst, protocol and
// port (any port for a protocol without ports). The end's rows are one range of the unique key
// (its first five columns).
const withEndTotal = (
  from = 'flows f',
) => `SELECT f.src, f.dst, f.protocol, f.port, f.workload, f.direction,
    f.last_seen AS lastSeen,
    (SELECT SUM(g.connections) FROM flows g
      WHERE g.workload = f.workload AND g.direction = f.direction AND g.src = f.src
        AND g.dst = f.dst AND g.protocol = f.protocol
        AND (g.port = f.port OR f.protocol NOT IN (${PORTED})))
      AS connections
  FROM ${from}`;

const ORDER =
  'ORDER BY f.last_seen DESC, f.workload, f.src, f.dst, f.protocol, f.port, f.verdict, f.rule_id';

const toFlow = (r: Row): FlowRow => ({
  workload: String(r.workload),
  direction: r.direction as FlowDirection,
  src: String(r.src),
  dst: String(r.dst),
  protocol: Number(r.protocol),
  port: Number(r.port),
  verdict: r.verdict as FlowVerdict,
  ruleId: String(r.rule_id),
  connections: Number(r.connections),
  bytes: Number(r.bytes),
  firstSeen: String(r.first_seen),
  lastSeen: String(r.last_seen),
});

/**
 * The rows' source and their counts: lifetime totals, or with a window the sums of the hourly
 * buckets overlapping it (the rows without one are left out). Sets the window's parameters.
 */
function windowed(q: FlowWindow, params: Record<string, unknown>) {
  if (q.since === undefined && q.until === undefined) {
    return { from: 'flows f', connections: 'f.connections', bytes: 'f.bytes' };
  }
  // A bucket covers [hour, hour + 1h): it overlaps the window when it starts at or before
  // `until` and at or after the hour holding `since`.
  params.since = q.since === undefined ? '' : hourOf(q.since);
  params.until = q.until ?? '9999';
  return {
    from: `flows f JOIN (SELECT flow_id, SUM(connections) AS c, SUM(bytes) AS b FROM flow_hours
      WHERE hour >= @since AND hour <= @until GROUP BY flow_id) h ON h.flow_id = f.id`,
    connections: 'h.c',
    bytes: 'h.b',
  };
}

export function createFlowStore(db: Database.Database, now: () => Date, limits: FlowLimits) {
  const insert = db.prepare(
    `INSERT INTO flows (workload, direction, src, dst, protocol, port, verdict, rule_id,
       connections, bytes, first_seen, last_seen, seq)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT DO NOTHING`,
  );
  // An existing row is found, then updated by id: no RETURNING, whose rows SQLite buffers
  // (the flow store's path for known rows went from 18-19 to 15-16 us of CPU a flow), and most
  // reports are of rows that exist.
  const idOf = db.prepare<Row>(
    `SELECT id FROM flows WHERE workload = ? AND direction = ? AND src = ? AND dst = ?
       AND protocol = ? AND port = ? AND verdict = ? AND rule_id = ?`,
  );
  const update = db.prepare(
    `UPDATE flows SET connections = connections + ?, bytes = bytes + ?,
       first_seen = MIN(first_seen, ?), last_seen = MAX(last_seen, ?), seq = ?
     WHERE id = ?`,
  );
  const addHour = db.prepare(
    `INSERT INTO flow_hours (flow_id, hour, connections, bytes) VALUES (?, ?, ?, ?)
     ON CONFLICT (flow_id, hour) DO UPDATE SET connections = connections + excluded.connections,
       bytes = bytes + excluded.bytes`,
  );
  const evictOldest = db.prepare(
    'DELETE FROM flows WHERE id IN (SELECT id FROM flows ORDER BY last_seen, id LIMIT ?)',
  );
  const KEY = 'workload, direction, src, dst, protocol, port';
  // Read, then deleted by id, to log what goes: `DELETE ... RETURNING` of the subquery's rows
  // cost 2-3 times the plain DELETE, and these two a row at a time less than either (300k rows).
  const oldestRows = db.prepare<Row>(`SELECT id, ${KEY} FROM flows ORDER BY last_seen, id LIMIT ?`);
  const deleteId = db.prepare('DELETE FROM flows WHERE id = ?');
  const countRows = db.prepare<Row>('SELECT COUNT(*) AS n FROM flows');
  const countOlder = db.prepare<Row>('SELECT COUNT(*) AS n FROM flows WHERE last_seen < ?');
  const pruneHours = db.prepare('DELETE FROM flow_hours WHERE hour < ?');
  const pruneRows = db.prepare('DELETE FROM flows WHERE last_seen < ?');
  const pruneRowsLogged = db.prepare<Row>(`DELETE FROM flows WHERE last_seen < ? RETURNING ${KEY}`);
  const deleteOf = db.prepare('DELETE FROM flows WHERE workload = ?');
  // The unique key's first column: one index range, where `query`'s OR of workload and
  // addresses scans the table (a second per call at 200k rows).
  // Rows in the answer's shape: no second object per row (a workload may hold 100k).
  const dependenciesOf = db.prepare<FlowDependency>(
    `SELECT direction, src, dst, protocol, port, first_seen AS firstSeen FROM flows
     WHERE workload = ?`,
  );
  const changedRows = db.prepare<Row>(`${withEndTotal()} WHERE f.seq > ?`);
  // The ends as one JSON array of keys: a statement per end cost twice as much.
  const endsRows = db.prepare<Row>(
    `WITH k AS (SELECT value ->> 0 AS w, value ->> 1 AS d, value ->> 2 AS s, value ->> 3 AS t,
         value ->> 4 AS p, value ->> 5 AS o FROM json_each(?))
     ${withEndTotal('k CROSS JOIN flows f')}
     WHERE f.workload = k.w AND f.direction = k.d AND f.src = k.s AND f.dst = k.t
       AND f.protocol = k.p AND (f.port = k.o OR f.protocol NOT IN (${PORTED}))`,
  );
  const workloadRows = db.prepare<Row>(`${withEndTotal()} WHERE f.workload = ?`);
  // A query's SQL depends only on how many matches it has and whether it has a window.
  const queries = new Map<string, Database.Statement<Row>>();
  const prepared = (sql: string) => {
    let s = queries.get(sql);
    if (!s) {
      s = db.prepare<Row>(sql);
      queries.set(sql, s);
    }
    return s;
  };
  // Counted once, then kept by hand: COUNT(*) per telemetry batch would scan the table.
  let rows = Number(countRows.get()?.n);
  // Only ever grows within the process, which is what readers of `changedSince` rely on.
  // Starting from the clock (x1024: far more than the writes of a millisecond) rather than
  // MAX(seq) spares a scan at startup: rows of an earlier process seldom look new, and
  // reading a row again is harmless.
  const changes: FlowChanges = { seq: Date.now() * 1024, loggedSince: 0 };
  // Removals in `seq` order. Kept short: a reader's `changedSince` drops what came before it,
  // and a reader that does not come for a while reads everything again anyway.
  let log: Array<{ seq: number; removed: RemovedFlows }> = [];
  const logSize = Math.max(1024, limits.maxRows >> 3);
  /** A removal of `n` rows: true when their keys fit in the log (`logEnds` them), else cuts it. */
  const logging = (n: number): boolean => {
    if (n <= 0) return false;
    changes.seq++;
    if (log.length + n <= logSize) return true;
    log = [];
    changes.loggedSince = changes.seq;
    return false;
  };
  const logEnds = (rows: Row[]) => {
    for (const r of rows as RowKey[]) {
      const { workload, direction, src, dst, protocol, port } = r;
      log.push({
        seq: changes.seq,
        removed: { removed: 'end', workload, direction, src, dst, protocol, port },
      });
    }
    return rows.length;
  };

  function evictOverCap(): number {
    const excess = rows - limits.maxRows;
    if (excess <= 0) return 0;
    let n: number;
    if (logging(excess)) {
      const oldest = oldestRows.all(excess);
      for (const r of oldest) deleteId.run(r.id);
      n = logEnds(oldest);
    } else {
      n = evictOldest.run(excess).changes;
    }
    rows -= n;
    return n;
  }

  return {
    /** Adds flow deltas of one workload (call inside the telemetry transaction); returns rows evicted by the cap. */
    ingest(workload: string, flows: Omit<FlowRow, 'workload'>[]): number {
      // A batch's flows mostly share their last-seen time: its hour is computed once.
      let lastSeen = '';
      let hour = '';
      for (const f of flows) {
        // Positional: binding twelve named parameters cost better-sqlite3 about as much as
        // the insert itself.
        const src = canonicalAddress(f.src);
        const dst = canonicalAddress(f.dst);
        const { direction, protocol, port, verdict, ruleId, connections, bytes } = f;
        const inserted = insert.run(
          workload,
          direction,
          src,
          dst,
          protocol,
          port,
          verdict,
          ruleId,
          connections,
          bytes,
          f.firstSeen,
          f.lastSeen,
          ++changes.seq,
        );
        let id: number;
        if (inserted.changes > 0) {
          rows++;
          id = Number(inserted.lastInsertRowid);
        } else {
          id = Number(idOf.get(workload, direction, src, dst, protocol, port, verdict, ruleId)?.id);
          update.run(connections, bytes, f.firstSeen, f.lastSeen, changes.seq, id);
        }
        if (f.lastSeen !== lastSeen) {
          lastSeen = f.lastSeen;
          hour = hourOf(lastSeen);
        }
        addHour.run(id, hour, f.connections, f.bytes);
      }
      return evictOverCap();
    },

    query(q: FlowQuery = {}): FlowRow[] {
      const params: Record<string, unknown> = {
        direction: q.direction ?? null,
        verdict: q.verdict ?? null,
        protocol: q.protocol ?? null,
        port: q.port ?? null,
        newSince: q.newSince ?? null,
        limit: q.limit ?? -1,
      };
      const where = [
        '(@direction IS NULL OR f.direction = @direction)',
        '(@verdict IS NULL OR f.verdict = @verdict)',
        '(@protocol IS NULL OR f.protocol = @protocol)',
        '(@port IS NULL OR f.port = @port)',
        '(@newSince IS NULL OR f.first_seen >= @newSince)',
      ];
      (q.match ?? []).forEach((m, i) => {
        params[`w${i}`] = JSON.stringify(m.workloads);
        params[`a${i}`] = JSON.stringify(m.addresses.map(canonicalAddress));
        where.push(
          `(f.workload IN (SELECT value FROM json_each(@w${i}))
            OR f.src IN (SELECT value FROM json_each(@a${i}))
            OR f.dst IN (SELECT value FROM json_each(@a${i})))`,
        );
      });
      const { from, connections, bytes } = windowed(q, params);
      return prepared(
        `SELECT f.workload, f.direction, f.src, f.dst, f.protocol, f.port, f.verdict, f.rule_id,
             ${connections} AS connections, ${bytes} AS bytes, f.first_seen, f.last_seen
           FROM ${from} WHERE ${where.join(' AND ')}
           ${ORDER}
           LIMIT @limit`,
      )
        .all(params)
        .map(toFlow);
    },

    /**
     * Every flow row with only what impact analysis reads, in no particular order, one at a
     * time: a million rows are never held at once. The database is busy until the iteration
     * ends; ask nothing else of it meanwhile. Read as arrays, made objects here: the driver
     * sets an object's columns one by one by name, which cost a third of a million-row read.
     */
    *observed(q: FlowWindow = {}): IterableIterator<ObservedRow> {
      const params: Record<string, unknown> = {};
      const { from, connections } = windowed(q, params);
      const rows = prepared(
        `SELECT f.src, f.dst, f.protocol, f.port, f.workload, f.direction,
             ${connections} AS connections,
             f.last_seen AS lastSeen
           FROM ${from}`,
      )
        .raw(true)
        .iterate(params) as IterableIterator<ObservedColumns>;
      for (const [src, dst, protocol, port, workload, direction, connections, lastSeen] of rows) {
        yield { src, dst, protocol, port, workload, direction, connections, lastSeen };
      }
    },

    /** Where the rows stand now: compare with a later call's. */
    changes: (): FlowChanges => ({ ...changes }),

    /**
     * What changed after `seq` (of `changes`, not before its `loggedSince`): first the removals
     * (each end or workload once), then the rows left of those ends and workloads, then the
     * rows written after `seq`; each row with lifetime totals and, as `connections`, the total
     * of its end (the reporting workload and direction) for its distinct flow: the rows of the
     * same src, dst, protocol and port (any port for a protocol without ports). The rows one at
     * a time, as `observed`. Removals up to `seq` are dropped from the log: a reader at an
     * earlier point reads everything again (`loggedSince` says so).
     */
    changedSince(seq: number): IterableIterator<ChangedRow> {
      let upTo = 0;
      while (upTo < log.length && log[upTo]!.seq <= seq) upTo++;
      if (upTo > 0) {
        changes.loggedSince = Math.max(changes.loggedSince, log[upTo - 1]!.seq);
        log = log.slice(upTo);
      }
      const removals = [
        ...new Map(log.map((r) => [JSON.stringify(r.removed), r.removed])).values(),
      ];
      const ends = removals.flatMap((r) =>
        r.removed === 'end' ? [[r.workload, r.direction, r.src, r.dst, r.protocol, r.port]] : [],
      );
      return (function* () {
        yield* removals;
        for (const r of removals) {
          if (r.removed !== 'workload') continue;
          yield* workloadRows.iterate(r.workload) as IterableIterator<ObservedRow>;
        }
        if (ends.length > 0) {
          yield* endsRows.iterate(JSON.stringify(ends)) as IterableIterator<ObservedRow>;
        }
        yield* changedRows.iterate(seq) as IterableIterator<ObservedRow>;
      })();
    },

    /** Drops buckets and rows older than the retention, then enforces the row cap. */
    prune(): PruneResult {
      const cutoff = new Date(now().getTime() - limits.retentionDays * DAY_MS).toISOString();
      const buckets = pruneHours.run(hourOf(cutoff)).changes;
      const older = Number(countOlder.get(cutoff)?.n);
      const expired = logging(older)
        ? logEnds(pruneRowsLogged.all(cutoff))
        : pruneRows.run(cutoff).changes;
      // Recounted here: the running count can drift when a telemetry transaction rolls back.
      rows = Number(countRows.get()?.n);
      return { buckets, expired, evicted: evictOverCap() };
    },

    deleteWorkload(workload: string): void {
      const n = deleteOf.run(workload).changes;
      // One entry, whatever the rows: a reader reads the rows left of the workload (none, unless
      // this delete is rolled back).
      if (logging(Math.min(n, 1)))
        log.push({ seq: changes.seq, removed: { removed: 'workload', workload } });
      rows -= n;
    },

    /** A workload's stored dependencies, in no order (what anomaly detection learns from). */
    dependencies: (workload: string): FlowDependency[] => dependenciesOf.all(workload),

    count: () => rows,
  };
}

export type FlowStore = ReturnType<typeof createFlowStore>;
