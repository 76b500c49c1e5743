import { createHash, randomBytes } from 'node:crypto';
import type { Labels, Workload, WorkloadMode } from '@bulkhead/policy';
import Database from 'better-sqlite3';
import { ControlPlaneError } from './errors.js';
import {
  createFlowStore,
  DEFAULT_FLOW_RETENTION_DAYS,
  DEFAULT_MAX_FLOW_ROWS,
  FLOWS_MIGRATION,
  type FlowQuery,
  type FlowRow,
  type PruneResult,
} from './flow-store.js';

// Each entry moves the schema from version i to i+1; applied in one transaction with the
// user_version bump, so a crash never leaves a half-migrated database.
const MIGRATIONS: string[] = [
  `
  CREATE TABLE workloads (
    name TEXT PRIMARY KEY,
    addresses TEXT NOT NULL,
    labels TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE ip_lists (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL);
  CREATE TABLE services (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL);
  CREATE TABLE policies (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL);
  CREATE TABLE revisions (
    n INTEGER PRIMARY KEY,
    author TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL,
    snapshot TEXT NOT NULL
  );
  -- The desired RuleSet of each workload (the latest compile), not a history: revisions are.
  -- revision: the newest revision this content is current for (may be newer than the body's).
  CREATE TABLE rulesets (
    workload TEXT PRIMARY KEY REFERENCES workloads(name) ON DELETE CASCADE,
    revision INTEGER NOT NULL,
    hash TEXT NOT NULL,
    body BLOB NOT NULL
  );
  CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    workload TEXT NOT NULL REFERENCES workloads(name) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    version TEXT NOT NULL DEFAULT '',
    applied_revision INTEGER NOT NULL DEFAULT 0,
    applied_hash TEXT NOT NULL DEFAULT '',
    last_seen TEXT,
    last_error TEXT NOT NULL DEFAULT '',
    last_apply_micros INTEGER NOT NULL DEFAULT 0,
    telemetry_seq INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
  );
  CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    labels TEXT NOT NULL,
    mode TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    max_uses INTEGER,
    uses INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
  );
  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used TEXT
  );
  CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
  );
  CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
  CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
  CREATE TABLE counters (
    workload TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    verdict TEXT NOT NULL,
    packets INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workload, rule_id, direction, verdict)
  );
  `,
  // 2: flow discovery (agents report observed connections) and agent events.
  `${FLOWS_MIGRATION}
  CREATE TABLE agent_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    workload TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    at TEXT NOT NULL,
    attributes TEXT NOT NULL
  );
  `,
  // 3: optimistic concurrency: every editable object counts its writes.
  `
  ALTER TABLE workloads ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
  ALTER TABLE ip_lists ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
  ALTER TABLE services ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
  ALTER TABLE policies ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
  `,
];

/** Exported for the migration test only. */
export const MIGRATIONS_FOR_TEST: readonly string[] = MIGRATIONS;

export const SCHEMA_VERSION = MIGRATIONS.length;

export type ResourceKind = 'ip_lists' | 'services' | 'policies';
export type Role = 'admin' | 'viewer';
export type CounterDirection = 'ingress' | 'egress';
export type CounterVerdict = 'allowed' | 'denied' | 'would-deny';

export interface WorkloadRecord extends Workload {
  createdAt: string;
  updatedAt: string;
  /** 1 when created, +1 per write (If-Match). */
  version: number;
}

export interface RevisionRecord {
  revision: number;
  author: string;
  note: string;
  createdAt: string;
}

export interface StoredRuleSet {
  workload: string;
  revision: number;
  hash: string;
  body: Buffer;
}

export interface AgentRecord {
  id: string;
  workload: string;
  hostname: string;
  certSerial: string;
  revoked: boolean;
  version: string;
  appliedRevision: number;
  appliedHash: string;
  lastSeen: string | null;
  lastError: string;
  lastApplyMicros: number;
  telemetrySeq: number;
  createdAt: string;
}

export interface EnrollmentTokenRecord {
  id: string;
  labels: Labels;
  mode: WorkloadMode;
  expiresAt: string;
  maxUses: number | null;
  uses: number;
  createdAt: string;
}

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

export interface CounterRow {
  workload: string;
  ruleId: string;
  direction: CounterDirection;
  verdict: CounterVerdict;
  packets: number;
  bytes: number;
}

export interface AgentEventRow {
  id: number;
  agentId: string;
  workload: string;
  code: string;
  message: string;
  at: string;
  attributes: Record<string, string>;
}

export type { FlowRow } from './flow-store.js';

export interface TelemetryBatch {
  counters: Omit<CounterRow, 'workload'>[];
  flows?: Omit<FlowRow, 'workload'>[];
  events?: Omit<AgentEventRow, 'id' | 'agentId' | 'workload'>[];
}

export interface StoreOptions {
  /** File path, or ':memory:' for tests. */
  path: string;
  /** Clock for timestamps and flow retention; tests pin it. */
  now?: () => Date;
  /** Hourly flow buckets, and flows not seen, older than this are pruned. Default 35. */
  flowRetentionDays?: number;
  /** Flow rows kept at most; the least recently seen go first. Default 1,000,000. */
  maxFlowRows?: number;
  /** Called with each audit entry once its transaction committed (SIEM export). */
  onAudit?: (entry: AuditEntry) => void;
}

/** Agent id of events the control plane records itself. */
export const CONTROL_PLANE_EVENT_SOURCE = 'control-plane';

/** sha256 hex of a secret; only this is ever stored. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new secret: prefix + 32 random bytes, base64url. */
export function newSecret(prefix: 'bh_' | 'bhe_'): string {
  return prefix + randomBytes(32).toString('base64url');
}

type Row = Record<string, unknown>;
const json = (v: unknown): string => JSON.stringify(v);
const parse = <T>(v: unknown): T => JSON.parse(String(v)) as T;

export type Store = ReturnType<typeof createStore>;

export function createStore(options: StoreOptions) {
  const now = options.now ?? (() => new Date());
  const iso = () => now().toISOString();
  const db = new Database(options.path);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  const flows = createFlowStore(db, now, {
    retentionDays: options.flowRetentionDays ?? DEFAULT_FLOW_RETENTION_DAYS,
    maxRows: options.maxFlowRows ?? DEFAULT_MAX_FLOW_ROWS,
  });

  // Audit entries of the open transaction, handed to onAudit only after it commits: an entry
  // exported for a change that then rolled back would tell the SIEM a lie.
  const pendingAudit: AuditEntry[] = [];
  function publishAudit(): void {
    const entries = pendingAudit.splice(0);
    for (const e of entries) options.onAudit?.(e);
  }

  function tx<T>(fn: () => T): T {
    const outermost = !db.inTransaction;
    const mark = pendingAudit.length;
    let result: T;
    try {
      result = db.transaction(fn)();
    } catch (err) {
      pendingAudit.length = mark;
      throw err;
    }
    if (outermost) publishAudit();
    return result;
  }

  function recordEvent(e: {
    agentId: string;
    workload: string;
    code: string;
    message: string;
    attributes: Record<string, string>;
  }): void {
    db.prepare(
      `INSERT INTO agent_events (agent_id, workload, code, message, at, attributes)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(e.agentId, e.workload, e.code, e.message, iso(), json(e.attributes));
  }

  function evicted(n: number): void {
    if (n === 0) return;
    recordEvent({
      agentId: CONTROL_PLANE_EVENT_SOURCE,
      workload: '',
      code: 'FLOW_ROWS_EVICTED',
      message: `flow store over its cap: ${n} least recently seen flows removed`,
      attributes: {
        evicted: String(n),
        maxFlowRows: String(options.maxFlowRows ?? DEFAULT_MAX_FLOW_ROWS),
      },
    });
  }

  const toWorkload = (r: Row): WorkloadRecord => ({
    name: String(r.name),
    addresses: parse(r.addresses),
    labels: parse(r.labels),
    mode: parse(r.mode),
    createdAt: String(r.created_at),
    updatedAt: String(r.updated_at),
    version: Number(r.version),
  });

  function getRevision<S>(n: number): (RevisionRecord & { snapshot: S }) | undefined {
    const r = db.prepare<Row>('SELECT * FROM revisions WHERE n = ?').get(n);
    if (!r) return undefined;
    return {
      revision: Number(r.n),
      author: String(r.author),
      note: String(r.note),
      createdAt: String(r.created_at),
      snapshot: parse<S>(r.snapshot),
    };
  }

  const toAgent = (r: Row): AgentRecord => ({
    id: String(r.id),
    workload: String(r.workload),
    hostname: String(r.hostname),
    certSerial: String(r.cert_serial),
    revoked: r.revoked === 1,
    version: String(r.version),
    appliedRevision: Number(r.applied_revision),
    appliedHash: String(r.applied_hash),
    lastSeen: r.last_seen === null ? null : String(r.last_seen),
    lastError: String(r.last_error),
    lastApplyMicros: Number(r.last_apply_micros),
    telemetrySeq: Number(r.telemetry_seq),
    createdAt: String(r.created_at),
  });

  const toEnrollment = (r: Row): EnrollmentTokenRecord => ({
    id: String(r.id),
    labels: parse(r.labels),
    mode: parse(r.mode),
    expiresAt: String(r.expires_at),
    maxUses: r.max_uses === null ? null : Number(r.max_uses),
    uses: Number(r.uses),
    createdAt: String(r.created_at),
  });

  const toApiToken = (r: Row): ApiTokenRecord => ({
    id: String(r.id),
    name: String(r.name),
    role: r.role as Role,
    createdAt: String(r.created_at),
    lastUsed: r.last_used === null ? null : String(r.last_used),
  });

  return {
    tx,
    close(): void {
      if (db.open) db.close();
    },
    schemaVersion(): number {
      return Number(db.pragma('user_version', { simple: true }));
    },

    // --- workloads
    listWorkloads(): WorkloadRecord[] {
      return db.prepare<Row>('SELECT * FROM workloads ORDER BY name').all().map(toWorkload);
    },
    getWorkload(name: string): WorkloadRecord | undefined {
      const r = db.prepare<Row>('SELECT * FROM workloads WHERE name = ?').get(name);
      return r && toWorkload(r);
    },
    upsertWorkload(w: Workload): void {
      const t = iso();
      db.prepare(
        `INSERT INTO workloads (name, addresses, labels, mode, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET addresses = excluded.addresses,
           labels = excluded.labels, mode = excluded.mode, updated_at = excluded.updated_at,
           version = workloads.version + 1`,
      ).run(w.name, json(w.addresses), json(w.labels), json(w.mode), t, t);
    },
    /** Also drops the workload's counters, flows and events: a host enrolled later under the name starts at zero. */
    deleteWorkload(name: string): boolean {
      db.prepare('DELETE FROM counters WHERE workload = ?').run(name);
      flows.deleteWorkload(name);
      db.prepare('DELETE FROM agent_events WHERE workload = ?').run(name);
      return db.prepare('DELETE FROM workloads WHERE name = ?').run(name).changes > 0;
    },

    // --- ip lists, services, policies: stored as the JSON body the admin PUT
    listResources<T>(kind: ResourceKind): T[] {
      return db
        .prepare<Row>(`SELECT body FROM ${kind} ORDER BY name`)
        .all()
        .map((r) => parse<T>(r.body));
    },
    getResource<T>(kind: ResourceKind, name: string): T | undefined {
      const r = db.prepare<Row>(`SELECT body FROM ${kind} WHERE name = ?`).get(name);
      return r && parse<T>(r.body);
    },
    /** Every object of a kind with its version, by name. */
    listVersioned<T>(kind: ResourceKind): { body: T; version: number }[] {
      return db
        .prepare<Row>(`SELECT body, version FROM ${kind} ORDER BY name`)
        .all()
        .map((r) => ({ body: parse<T>(r.body), version: Number(r.version) }));
    },
    getVersioned<T>(kind: ResourceKind, name: string): { body: T; version: number } | undefined {
      const r = db.prepare<Row>(`SELECT body, version FROM ${kind} WHERE name = ?`).get(name);
      return r && { body: parse<T>(r.body), version: Number(r.version) };
    },
    /** Creates (version 1) or replaces (version + 1); returns the new version. */
    putResource(kind: ResourceKind, name: string, body: unknown): number {
      const r = db
        .prepare<Row>(
          `INSERT INTO ${kind} (name, body, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at,
             version = ${kind}.version + 1
           RETURNING version`,
        )
        .get(name, json(body), iso());
      return Number(r?.version);
    },
    /**
     * Makes a kind hold exactly `bodies` (discard, rollback). Objects whose body changes count
     * a write; unchanged ones keep their version, so an editor holding them is not refused.
     */
    replaceResources(kind: ResourceKind, bodies: { name: string }[]): void {
      const current = new Map(
        db
          .prepare<Row>(`SELECT name, body FROM ${kind}`)
          .all()
          .map((r) => [String(r.name), String(r.body)]),
      );
      const keep = new Set(bodies.map((b) => b.name));
      const drop = db.prepare(`DELETE FROM ${kind} WHERE name = ?`);
      for (const name of current.keys()) if (!keep.has(name)) drop.run(name);
      const put = db.prepare(
        `INSERT INTO ${kind} (name, body, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at,
           version = ${kind}.version + 1`,
      );
      for (const b of bodies) if (current.get(b.name) !== json(b)) put.run(b.name, json(b), iso());
    },
    deleteResource(kind: ResourceKind, name: string): boolean {
      return db.prepare(`DELETE FROM ${kind} WHERE name = ?`).run(name).changes > 0;
    },

    // --- revisions
    addRevision(author: string, note: string, snapshot: unknown): number {
      const r = db.prepare<Row>('SELECT COALESCE(MAX(n), 0) + 1 AS n FROM revisions').get();
      const n = Number(r?.n);
      db.prepare(
        'INSERT INTO revisions (n, author, note, created_at, snapshot) VALUES (?, ?, ?, ?, ?)',
      ).run(n, author, note, iso(), json(snapshot));
      return n;
    },
    listRevisions(): RevisionRecord[] {
      return db
        .prepare<Row>('SELECT n, author, note, created_at FROM revisions ORDER BY n DESC')
        .all()
        .map((r) => ({
          revision: Number(r.n),
          author: String(r.author),
          note: String(r.note),
          createdAt: String(r.created_at),
        }));
    },
    getRevision,
    latestRevision<S>(): (RevisionRecord & { snapshot: S }) | undefined {
      const r = db.prepare<Row>('SELECT MAX(n) AS n FROM revisions').get();
      return r?.n == null ? undefined : getRevision<S>(Number(r.n));
    },

    // --- rulesets
    getRuleSet(workload: string): StoredRuleSet | undefined {
      const r = db.prepare<Row>('SELECT * FROM rulesets WHERE workload = ?').get(workload);
      return (
        r && {
          workload: String(r.workload),
          revision: Number(r.revision),
          hash: String(r.hash),
          body: r.body as Buffer,
        }
      );
    },
    getRuleSetHash(workload: string): string | undefined {
      const r = db.prepare<Row>('SELECT hash FROM rulesets WHERE workload = ?').get(workload);
      return r && String(r.hash);
    },
    /** workload -> desired hash and the newest revision that content is current for. */
    desiredRuleSets(): Map<string, { hash: string; revision: number }> {
      const rows = db.prepare<Row>('SELECT workload, hash, revision FROM rulesets').all();
      return new Map(
        rows.map((r) => [
          String(r.workload),
          { hash: String(r.hash), revision: Number(r.revision) },
        ]),
      );
    },
    /** Marks an unchanged RuleSet as current for a newer revision without touching its body. */
    touchRuleSet(workload: string, revision: number): void {
      db.prepare('UPDATE rulesets SET revision = ? WHERE workload = ?').run(revision, workload);
    },
    putRuleSet(rs: StoredRuleSet): void {
      db.prepare(
        `INSERT INTO rulesets (workload, revision, hash, body) VALUES (?, ?, ?, ?)
         ON CONFLICT (workload) DO UPDATE SET revision = excluded.revision,
           hash = excluded.hash, body = excluded.body`,
      ).run(rs.workload, rs.revision, rs.hash, rs.body);
    },
    deleteRuleSet(workload: string): void {
      db.prepare('DELETE FROM rulesets WHERE workload = ?').run(workload);
    },

    // --- agents
    createAgent(a: { id: string; workload: string; hostname: string; certSerial: string }): void {
      db.prepare(
        'INSERT INTO agents (id, workload, hostname, cert_serial, created_at) VALUES (?, ?, ?, ?, ?)',
      ).run(a.id, a.workload, a.hostname, a.certSerial, iso());
    },
    getAgent(id: string): AgentRecord | undefined {
      const r = db.prepare<Row>('SELECT * FROM agents WHERE id = ?').get(id);
      return r && toAgent(r);
    },
    listAgents(workload?: string): AgentRecord[] {
      const rows =
        workload === undefined
          ? db.prepare<Row>('SELECT * FROM agents ORDER BY workload, id').all()
          : db.prepare<Row>('SELECT * FROM agents WHERE workload = ? ORDER BY id').all(workload);
      return rows.map(toAgent);
    },
    revokeAgent(id: string): void {
      db.prepare('UPDATE agents SET revoked = 1 WHERE id = ?').run(id);
    },
    recordHello(id: string, version: string): void {
      db.prepare('UPDATE agents SET version = ?, last_seen = ? WHERE id = ?').run(
        version,
        iso(),
        id,
      );
    },
    recordAck(
      id: string,
      ack: { revision: number; hash: string; error: string; applyMicros: number },
    ): void {
      // A failed apply leaves the previous rules in place, so applied_* stay as they were.
      if (ack.error === '') {
        db.prepare(
          `UPDATE agents SET applied_revision = ?, applied_hash = ?, last_error = '',
             last_apply_micros = ?, last_seen = ? WHERE id = ?`,
        ).run(ack.revision, ack.hash, ack.applyMicros, iso(), id);
      } else {
        db.prepare('UPDATE agents SET last_error = ?, last_seen = ? WHERE id = ?').run(
          ack.error,
          iso(),
          id,
        );
      }
    },
    /** Adds a telemetry batch once: false (and no change) when seq was already counted. */
    addTelemetry(agentId: string, seq: number, batch: TelemetryBatch): boolean {
      return tx(() => {
        const a = db
          .prepare<Row>('SELECT workload, telemetry_seq FROM agents WHERE id = ?')
          .get(agentId);
        if (!a || seq <= Number(a.telemetry_seq)) return false;
        const addCounter = db.prepare(
          `INSERT INTO counters (workload, rule_id, direction, verdict, packets, bytes)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (workload, rule_id, direction, verdict) DO UPDATE SET
             packets = packets + excluded.packets, bytes = bytes + excluded.bytes`,
        );
        for (const c of batch.counters) {
          addCounter.run(a.workload, c.ruleId, c.direction, c.verdict, c.packets, c.bytes);
        }
        const evictedRows = flows.ingest(String(a.workload), batch.flows ?? []);
        const addEvent = db.prepare(
          `INSERT INTO agent_events (agent_id, workload, code, message, at, attributes)
           VALUES (?, ?, ?, ?, ?, ?)`,
        );
        for (const e of batch.events ?? []) {
          addEvent.run(agentId, a.workload, e.code, e.message, e.at, json(e.attributes));
        }
        evicted(evictedRows);
        db.prepare('UPDATE agents SET telemetry_seq = ?, last_seen = ? WHERE id = ?').run(
          seq,
          iso(),
          agentId,
        );
        return true;
      });
    },

    /** Discovered flows, most recently seen first. */
    queryFlows: (q?: FlowQuery): FlowRow[] => flows.query(q),
    /** Retention and the row cap; records an event when the cap evicted rows. */
    pruneFlows(): PruneResult {
      return tx(() => {
        const result = flows.prune();
        evicted(result.evicted);
        return result;
      });
    },
    flowCount: () => flows.count(),

    /** Events agents reported, newest first. */
    listEvents(filter: { workload?: string; limit?: number } = {}): AgentEventRow[] {
      return db
        .prepare<Row>(
          `SELECT * FROM agent_events WHERE (@w IS NULL OR workload = @w) ORDER BY id DESC LIMIT @limit`,
        )
        .all({ w: filter.workload ?? null, limit: filter.limit ?? 100 })
        .map((r) => ({
          id: Number(r.id),
          agentId: String(r.agent_id),
          workload: String(r.workload),
          code: String(r.code),
          message: String(r.message),
          at: String(r.at),
          attributes: parse(r.attributes),
        }));
    },

    // --- counters
    listCounters(filter: { workload?: string; ruleId?: string } = {}): CounterRow[] {
      return db
        .prepare<Row>(
          `SELECT * FROM counters WHERE (@w IS NULL OR workload = @w) AND (@r IS NULL OR rule_id = @r)
           ORDER BY workload, rule_id, direction, verdict`,
        )
        .all({ w: filter.workload ?? null, r: filter.ruleId ?? null })
        .map((r) => ({
          workload: String(r.workload),
          ruleId: String(r.rule_id),
          direction: r.direction as CounterDirection,
          verdict: r.verdict as CounterVerdict,
          packets: Number(r.packets),
          bytes: Number(r.bytes),
        }));
    },

    // --- enrollment (bootstrap) tokens
    createEnrollmentToken(t: {
      id: string;
      tokenHash: string;
      labels: Labels;
      mode: WorkloadMode;
      expiresAt: string;
      maxUses: number | null;
    }): void {
      db.prepare(
        `INSERT INTO enrollment_tokens (id, token_hash, labels, mode, expires_at, max_uses, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ).run(t.id, t.tokenHash, json(t.labels), json(t.mode), t.expiresAt, t.maxUses, iso());
    },
    findEnrollmentToken(tokenHash: string): EnrollmentTokenRecord | undefined {
      const r = db
        .prepare<Row>('SELECT * FROM enrollment_tokens WHERE token_hash = ?')
        .get(tokenHash);
      return r && toEnrollment(r);
    },
    getEnrollmentToken(id: string): EnrollmentTokenRecord | undefined {
      const r = db.prepare<Row>('SELECT * FROM enrollment_tokens WHERE id = ?').get(id);
      return r && toEnrollment(r);
    },
    listEnrollmentTokens(): EnrollmentTokenRecord[] {
      return db
        .prepare<Row>('SELECT * FROM enrollment_tokens ORDER BY created_at, id')
        .all()
        .map(toEnrollment);
    },
    useEnrollmentToken(id: string): void {
      db.prepare('UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?').run(id);
    },
    deleteEnrollmentToken(id: string): boolean {
      return db.prepare('DELETE FROM enrollment_tokens WHERE id = ?').run(id).changes > 0;
    },

    // --- API tokens
    createApiToken(t: { id: string; name: string; role: Role; tokenHash: string }): void {
      db.prepare(
        'INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)',
      ).run(t.id, t.name, t.role, t.tokenHash, iso());
    },
    findApiToken(tokenHash: string): ApiTokenRecord | undefined {
      const r = db.prepare<Row>('SELECT * FROM api_tokens WHERE token_hash = ?').get(tokenHash);
      return r && toApiToken(r);
    },
    getApiToken(id: string): ApiTokenRecord | undefined {
      const r = db.prepare<Row>('SELECT * FROM api_tokens WHERE id = ?').get(id);
      return r && toApiToken(r);
    },
    listApiTokens(): ApiTokenRecord[] {
      return db
        .prepare<Row>('SELECT * FROM api_tokens ORDER BY created_at, id')
        .all()
        .map(toApiToken);
    },
    countApiTokens(): number {
      return Number(db.prepare<Row>('SELECT COUNT(*) AS c FROM api_tokens').get()?.c);
    },
    touchApiToken(id: string): void {
      db.prepare('UPDATE api_tokens SET last_used = ? WHERE id = ?').run(iso(), id);
    },
    deleteApiToken(id: string): boolean {
      return db.prepare('DELETE FROM api_tokens WHERE id = ?').run(id).changes > 0;
    },

    // --- audit (append-only, enforced by triggers)
    appendAudit(e: {
      actor: string;
      action: string;
      target: string;
      before?: unknown;
      after?: unknown;
    }): void {
      const at = iso();
      const r = db
        .prepare(
          'INSERT INTO audit (at, actor, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)',
        )
        .run(
          at,
          e.actor,
          e.action,
          e.target,
          e.before === undefined ? null : json(e.before),
          e.after === undefined ? null : json(e.after),
        );
      pendingAudit.push({
        id: Number(r.lastInsertRowid),
        at,
        actor: e.actor,
        action: e.action,
        target: e.target,
        before: e.before ?? null,
        after: e.after ?? null,
      });
      // Outside a transaction the insert has committed already.
      if (!db.inTransaction) publishAudit();
    },
    /**
     * Newest first. `sinceId` (exclusive) pages forward by id; `sinceTime` (ISO, exclusive)
     * keeps entries newer than a moment.
     */
    listAudit(opts: { limit?: number; sinceId?: number; sinceTime?: string } = {}): AuditEntry[] {
      return db
        .prepare<Row>(
          `SELECT * FROM audit WHERE id > @id AND (@t IS NULL OR at > @t) ORDER BY id DESC LIMIT @limit`,
        )
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
