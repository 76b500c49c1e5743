// The one SQLite database every domain store shares: opening it (WAL, foreign keys), the one
// migration list, the one transaction helper, and work deferred until a commit. It owns no
// table and holds no query of a domain: those live in each domain's store.
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import { ControlPlaneError } from '../errors.js';
import { MIGRATIONS } from './migrations.js';

export type Row = Record<string, unknown>;
export const json = (v: unknown): string => JSON.stringify(v);
export const parse = <T>(v: unknown): T => JSON.parse(String(v)) as T;

/** What a domain needs to make several writes atomic; a second store implementation brings its own. */
export interface Transactor {
  /** Runs fn in a transaction (nested calls join the outer one); rolls back when fn throws. */
  tx<T>(fn: () => T): T;
}

export interface SqliteDatabase extends Transactor {
  readonly db: Database.Database;
  now(): Date;
  /** `now()` as ISO text, the timestamp format of every table. */
  iso(): string;
  /** Runs fn once the open transaction committed (at once outside one); dropped on rollback. */
  afterCommit(fn: () => void): void;
  schemaVersion(): number;
  close(): void;
}

export function openDatabase(path: string, now: () => Date = () => new Date()): SqliteDatabase {
  if (path !== ':memory:') ownerOnly(path);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // SQLite creates -wal and -shm with the database file's mode; files left by an older version
  // (0644 under umask 022) are narrowed here.
  if (path !== ':memory:') for (const f of [`${path}-wal`, `${path}-shm`]) ownerOnly(f, false);
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  // In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives a crash of
  // the process, and the database stays consistent on power loss, which may lose the last
  // commits before it (a provision's revision, an audit entry, telemetry batches). FULL cost
  // the telemetry ingest about a third of its rate in fsync waits that stall the event loop.
  db.pragma('synchronous = NORMAL');
  migrate(db);

  // Work for after the outermost commit (the SIEM export of audit entries): an entry exported
  // for a change that then rolled back would tell the SIEM a lie.
  const pending: (() => void)[] = [];
  const flush = () => {
    for (const fn of pending.splice(0)) fn();
  };

  return {
    db,
    now,
    iso: () => now().toISOString(),
    tx<T>(fn: () => T): T {
      const outermost = !db.inTransaction;
      const mark = pending.length;
      let result: T;
      try {
        result = db.transaction(fn)();
      } catch (err) {
        pending.length = mark;
        throw err;
      }
      if (outermost) flush();
      return result;
    },
    afterCommit(fn) {
      pending.push(fn);
      // Outside a transaction the write has committed already.
      if (!db.inTransaction) flush();
    },
    schemaVersion: () => Number(db.pragma('user_version', { simple: true })),
    close() {
      if (db.open) db.close();
    },
  };
}

/**
 * Policies, audit, flows and token hashes are for the control plane's user alone: 0600 whatever
 * the umask (the file is created before SQLite opens it, then chmod, as umask applies at create).
 */
function ownerOnly(file: string, create = true): void {
  if (create) closeSync(openSync(file, 'a', 0o600));
  if (existsSync(file)) chmodSync(file, 0o600);
}

function migrate(db: Database.Database): void {
  const current = Number(db.pragma('user_version', { simple: true }));
  if (current > MIGRATIONS.length) {
    throw new ControlPlaneError(
      'INTERNAL',
      `database schema version ${current} is newer than this control plane (${MIGRATIONS.length})`,
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
