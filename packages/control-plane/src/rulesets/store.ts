// The rulesets table: each workload's desired RuleSet (the latest compile), not a history.
// Must not compile or push (rulesets/publisher.ts does).

import type { Row, SqliteDatabase } from '../store/database.js';

export interface StoredRuleSet {
  workload: string;
  /** The newest revision this content is current for (may be newer than the body's). */
  revision: number;
  hash: string;
  body: Buffer;
}

export interface RuleSetStore {
  getRuleSet(workload: string): StoredRuleSet | undefined;
  getRuleSetHash(workload: string): string | undefined;
  /** workload -> desired hash and the newest revision that content is current for. */
  desiredRuleSets(): Map<string, { hash: string; revision: number }>;
  /** Marks an unchanged RuleSet as current for a newer revision without touching its body. */
  touchRuleSet(workload: string, revision: number): void;
  putRuleSet(rs: StoredRuleSet): void;
}

export function createSqliteRuleSetStore(d: SqliteDatabase): RuleSetStore {
  const { db } = d;
  const get = db.prepare<Row>('SELECT * FROM rulesets WHERE workload = ?');
  const getHash = db.prepare<Row>('SELECT hash FROM rulesets WHERE workload = ?');
  const desired = db.prepare<Row>('SELECT workload, hash, revision FROM rulesets');
  const touch = db.prepare('UPDATE rulesets SET revision = ? WHERE workload = ?');
  const put = db.prepare(
    `INSERT INTO rulesets (workload, revision, hash, body) VALUES (?, ?, ?, ?)
     ON CONFLICT (workload) DO UPDATE SET revision = excluded.revision,
       hash = excluded.hash, body = excluded.body`,
  );
  return {
    getRuleSet(workload) {
      const r = get.get(workload);
      return (
        r && {
          workload: String(r.workload),
          revision: Number(r.revision),
          hash: String(r.hash),
          body: r.body as Buffer,
        }
      );
    },
    getRuleSetHash(workload) {
      const r = getHash.get(workload);
      return r && String(r.hash);
    },
    desiredRuleSets: () =>
      new Map(
        desired
          .all()
          .map((r) => [String(r.workload), { hash: String(r.hash), revision: Number(r.revision) }]),
      ),
    touchRuleSet(workload, revision) {
      touch.run(revision, workload);
    },
    putRuleSet(rs) {
      put.run(rs.workload, rs.revision, rs.hash, rs.body);
    },
  };
}
