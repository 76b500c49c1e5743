// Access's tables: API tokens (hashes only) and the append-only audit log. Must not decide who
// may do what (access/service.ts does) nor hold another domain's rows.
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';

export type Role = 'admin' | 'viewer';

export interface ApiTokenRecord {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  lastUsed: string | null;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  before: unknown;
  after: unknown;
}

/** What every domain writes to the audit log, in its own transaction. */
export interface AuditLog {
  appendAudit(e: {
    actor: string;
    action: string;
    target: string;
    before?: unknown;
    after?: unknown;
  }): void;
}

export interface AccessStore extends AuditLog {
  createApiToken(t: { id: string; name: string; role: Role; tokenHash: string }): void;
  findApiToken(tokenHash: string): ApiTokenRecord | undefined;
  getApiToken(id: string): ApiTokenRecord | undefined;
  listApiTokens(): ApiTokenRecord[];
  countApiTokens(): number;
  touchApiToken(id: string): void;
  deleteApiToken(id: string): boolean;
  /**
   * Newest first. `sinceId` (exclusive) pages forward by id; `sinceTime` (ISO, exclusive)
   * keeps entries newer than a moment.
   */
  listAudit(opts?: { limit?: number; sinceId?: number; sinceTime?: string }): AuditEntry[];
}

const toApiToken = (r: Row): ApiTokenRecord => ({
  id: String(r.id),
  name: String(r.name),
  role: r.role as Role,
  createdAt: String(r.created_at),
  lastUsed: r.last_used === null ? null : String(r.last_used),
});

/** `onAudit` sees each entry once its transaction committed (the SIEM export). */
export function createSqliteAccessStore(
  d: SqliteDatabase,
  onAudit?: (entry: AuditEntry) => void,
): AccessStore {
  const { db } = d;
  const insertToken = db.prepare(
    'INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)',
  );
  const tokenByHash = db.prepare<Row>('SELECT * FROM api_tokens WHERE token_hash = ?');
  const tokenById = db.prepare<Row>('SELECT * FROM api_tokens WHERE id = ?');
  const allTokens = db.prepare<Row>('SELECT * FROM api_tokens ORDER BY created_at, id');
  const countTokens = db.prepare<Row>('SELECT COUNT(*) AS c FROM api_tokens');
  const touchToken = db.prepare('UPDATE api_tokens SET last_used = ? WHERE id = ?');
  const deleteToken = db.prepare('DELETE FROM api_tokens WHERE id = ?');
  const insertAudit = db.prepare(
    'INSERT INTO audit (at, actor, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const selectAudit = db.prepare<Row>(
    `SELECT * FROM audit WHERE id > @id AND (@t IS NULL OR at > @t) ORDER BY id DESC LIMIT @limit`,
  );

  return {
    createApiToken(t) {
      insertToken.run(t.id, t.name, t.role, t.tokenHash, d.iso());
    },
    findApiToken(tokenHash) {
      const r = tokenByHash.get(tokenHash);
      return r && toApiToken(r);
    },
    getApiToken(id) {
      const r = tokenById.get(id);
      return r && toApiToken(r);
    },
    listApiTokens: () => allTokens.all().map(toApiToken),
    countApiTokens: () => Number(countTokens.get()?.c),
    touchApiToken(id) {
      touchToken.run(d.iso(), id);
    },
    deleteApiToken: (id) => deleteToken.run(id).changes > 0,

    appendAudit(e) {
      const at = d.iso();
      const r = insertAudit.run(
        at,
        e.actor,
        e.action,
        e.target,
        e.before === undefined ? null : json(e.before),
        e.after === undefined ? null : json(e.after),
      );
      const entry: AuditEntry = {
        id: Number(r.lastInsertRowid),
        at,
        actor: e.actor,
        action: e.action,
        target: e.target,
        before: e.before ?? null,
        after: e.after ?? null,
      };
      if (onAudit) d.afterCommit(() => onAudit(entry));
    },
    listAudit(opts = {}) {
      return selectAudit
        .all({ id: opts.sinceId ?? 0, t: opts.sinceTime ?? null, limit: opts.limit ?? 100 })
        .map((r) => ({
          id: Number(r.id),
          at: String(r.at),
          actor: String(r.actor),
          action: String(r.action),
          target: String(r.target),
          before: r.before === null ? null : parse(r.before),
          after: r.after === null ? null : parse(r.after),
        }));
    },
  };
}
