// The revisions table: numbered, immutable snapshots of the policy with author and note. Must
// not compile, diff or publish anything (revisions/service.ts does).
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';

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

export function createSqliteRevisionStore(d: SqliteDatabase): RevisionStore {
  const { db } = d;
  const nextNumber = db.prepare<Row>('SELECT COALESCE(MAX(n), 0) + 1 AS n FROM revisions');
  const latestRecord = db.prepare<Row>(
    'SELECT n, author, note, created_at FROM revisions ORDER BY n DESC LIMIT 1',
  );
  const insert = db.prepare(
    'INSERT INTO revisions (n, author, note, created_at, snapshot) VALUES (?, ?, ?, ?, ?)',
  );
  const list = db.prepare<Row>('SELECT n, author, note, created_at FROM revisions ORDER BY n DESC');
  const byNumber = db.prepare<Row>('SELECT * FROM revisions WHERE n = ?');
  const latest = db.prepare<Row>('SELECT * FROM revisions ORDER BY n DESC LIMIT 1');

  const toRecord = (r: Row): RevisionRecord => ({
    revision: Number(r.n),
    author: String(r.author),
    note: String(r.note),
    createdAt: String(r.created_at),
  });
  const withSnapshot = <S>(r: Row | undefined) =>
    r && { ...toRecord(r), snapshot: parse<S>(r.snapshot) };

  return {
    addRevision(author, note, snapshot) {
      const n = Number(nextNumber.get()?.n);
      insert.run(n, author, note, d.iso(), json(snapshot));
      return n;
    },
    listRevisions: () => list.all().map(toRecord),
    getRevision: <S>(n: number) => withSnapshot<S>(byNumber.get(n)),
    latestRevision: <S>() => withSnapshot<S>(latest.get()),
    latestRevisionRecord() {
      const r = latestRecord.get();
      return r && toRecord(r);
    },
  };
}
