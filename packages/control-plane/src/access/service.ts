// Access: who may call the REST API (API tokens and their roles), and the audit log's reading
// side. Every domain appends to the audit log itself (AuditLog), in its own transaction. Must not
// know workloads, policy or agents.
import { randomUUID } from 'node:crypto';
import { ControlPlaneError, invalid, notFound } from '../errors.js';
import type { Transactor } from '../store/database.js';
import { hashSecret, newSecret } from './secrets.js';
import type { AccessStore, ApiTokenRecord, AuditEntry, Role } from './store.js';

export interface AccessService {
  /** The token a bearer secret names (its last use recorded), or UNAUTHENTICATED. */
  authenticate(bearer: string): ApiTokenRecord;
  /** On first start (no API tokens at all) creates an admin token and returns it. */
  bootstrapAdminToken(): string | undefined;
  createApiToken(actor: string, name: string, role: Role): { id: string; token: string };
  listApiTokens(): ApiTokenRecord[];
  deleteApiToken(actor: string, id: string): void;
  /** `since`: an audit id (exclusive) or an ISO timestamp. */
  listAudit(opts: { limit?: number; since?: string }): AuditEntry[];
}

export function createAccessService(deps: { store: AccessStore; db: Transactor }): AccessService {
  const { store, db } = deps;
  const access: AccessService = {
    authenticate(bearer) {
      const token = store.findApiToken(hashSecret(bearer));
      if (!token) throw new ControlPlaneError('UNAUTHENTICATED', 'unknown API token');
      store.touchApiToken(token.id);
      return token;
    },
    bootstrapAdminToken() {
      return db.tx(() => {
        if (store.countApiTokens() > 0) return undefined;
        return access.createApiToken('system', 'initial-admin', 'admin').token;
      });
    },
    createApiToken(actor, name, role) {
      const id = randomUUID();
      const token = newSecret('bh_');
      db.tx(() => {
        store.createApiToken({ id, name, role, tokenHash: hashSecret(token) });
        store.appendAudit({ actor, action: 'api-token.create', target: id, after: { name, role } });
      });
      return { id, token };
    },
    listApiTokens: () => store.listApiTokens(),
    deleteApiToken(actor, id) {
      db.tx(() => {
        const before = store.getApiToken(id);
        if (!before || !store.deleteApiToken(id)) throw notFound(`API token ${id}`);
        store.appendAudit({ actor, action: 'api-token.delete', target: id, before });
      });
    },
    listAudit(opts) {
      if (opts.since === undefined) return store.listAudit({ limit: opts.limit });
      if (/^\d+$/.test(opts.since)) {
        return store.listAudit({ limit: opts.limit, sinceId: Number(opts.since) });
      }
      const t = Date.parse(opts.since);
      if (Number.isNaN(t)) {
        throw invalid('invalid query', [
          { path: 'since', message: 'must be an audit id or an ISO 8601 time' },
        ]);
      }
      return store.listAudit({ limit: opts.limit, sinceTime: new Date(t).toISOString() });
    },
  };
  return access;
}
