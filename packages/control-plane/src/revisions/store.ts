// The revisions table: numbered, immutable snapshots of the policy with author and note. A
// snapshot made of named lists (a policy state) is stored as what changed since the revision
// before it (`snapshot-delta.ts`), whole every CHECKPOINT revisions, so a provision that changes
// one workload stores one workload, and reading a revision replays at most CHECKPOINT - 1 deltas.
// The newest committed snapshot stays in memory (the next provision's base). Must not compile,
// diff or publish anything (revisions/service.ts does).
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';
import { applyDelta, deltaOf, type SnapshotDelta } from './snapshot-delta.js';

export interface RevisionRecord {
  revision: number;
  author: string;
  note: string;
  createdAt: string;
}

export type RevisionWithSnapshot<S> = RevisionRecord & { snapshot: S };

export interface RevisionStore {
  /** Adds the next revision (1 + the highest); returns its number. */
  addRevision(author: string, note: string, snapshot: unknown): number;
  /** Newest first, without snapshots. */
  listRevisions(): RevisionRecord[];
  getRevision<S>(n: number): RevisionWithSnapshot<S> | undefined;
  latestRevision<S>(): RevisionWithSnapshot<S> | undefined;
  /** The latest revision without its snapshot (cheap: read per telemetry batch, per write). */
  latestRevisionRecord(): RevisionRecord | undefined;
}

/** A revision whose number is 1 modulo this is stored whole. */
export const CHECKPOINT = 32;

export function createSqliteRevisionStore(d: SqliteDatabase): RevisionStore {
  const { db } = d;
  const nextNumber = db.prepare<Row>('SELECT COALESCE(MAX(n), 0) + 1 AS n FROM revisions');
  const latestRecord = db.prepare<Row>(
    'SELECT n, author, note, created_at FROM revisions ORDER BY n DESC LIMIT 1',
  );
  const insert = db.prepare(
    'INSERT INTO revisions (n, author, note, created_at, snapshot, delta) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const list = db.prepare<Row>('SELECT n, author, note, created_at FROM revisions ORDER BY n DESC');
  const recordOf = db.prepare<Row>('SELECT n, author, note, created_at FROM revisions WHERE n = ?');
  /** The whole snapshot at or before n that n's deltas start from. */
  const wholeAtOrBefore = db.prepare<Row>(
    'SELECT MAX(n) AS n FROM revisions WHERE n <= ? AND delta = 0',
  );
  const range = db.prepare<Row>(
    'SELECT n, snapshot, delta FROM revisions WHERE n >= ? AND n <= ? ORDER BY n',
  );

  const toRecord = (r: Row): RevisionRecord => ({
    revision: Number(r.n),
    author: String(r.author),
    note: String(r.note),
    createdAt: String(r.created_at),
  });

  /**
   * The newest snapshot committed by this store (revisions never change once committed; one
   * added in a transaction that rolled back never gets here).
   */
  let last: { n: number; snapshot: unknown } | undefined;

  function snapshotOf(n: number): unknown {
    if (last?.n === n) return last.snapshot;
    const whole = Number(wholeAtOrBefore.get(n)?.n ?? 0);
    if (whole === 0) return undefined;
    // Replay from the kept snapshot when it lies between the whole one and n.
    const from = last && last.n >= whole && last.n < n ? last : undefined;
    let snapshot = from?.snapshot;
    for (const r of range.all(from ? from.n + 1 : whole, n)) {
      const stored = parse<unknown>(r.snapshot);
      snapshot = Number(r.delta) ? applyDelta(snapshot, stored as SnapshotDelta) : stored;
    }
    return snapshot;
  }

  function withSnapshot<S>(n: number): RevisionWithSnapshot<S> | undefined {
    const r = recordOf.get(n);
    return r && { ...toRecord(r), snapshot: snapshotOf(n) as S };
  }

  return {
    addRevision(author, note, snapshot) {
      const n = Number(nextNumber.get()?.n);
      const delta = n % CHECKPOINT === 1 ? undefined : deltaOf(snapshotOf(n - 1), snapshot);
      insert.run(n, author, note, d.iso(), json(delta ?? snapshot), delta ? 1 : 0);
      d.afterCommit(() => {
        last = { n, snapshot };
      });
      return n;
    },
    listRevisions: () => list.all().map(toRecord),
    getRevision: <S>(n: number) => withSnapshot<S>(n),
    latestRevision<S>() {
      const r = latestRecord.get();
      return r && { ...toRecord(r), snapshot: snapshotOf(Number(r.n)) as S };
    },
    latestRevisionRecord() {
      const r = latestRecord.get();
      return r && toRecord(r);
    },
  };
}
