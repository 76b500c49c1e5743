// Fleet's tables: agents (identity, sync state, telemetry seq), enrolment tokens (hashes only)
// and per-rule counters. Must not hold workloads, RuleSets or flows: a telemetry batch's flows
// and events go to visibility's TelemetrySink in the same transaction.
import type { Labels, WorkloadMode } from '@bulkhead/policy';
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';
import {
  CONTROL_PLANE_EVENT_SOURCE,
  type FlowDelta,
  type ReportedEvent,
  type TelemetrySink,
} from '../visibility/store.js';
import type { EnrollmentScope } from './claims.js';

export type CounterDirection = 'ingress' | 'egress';
export type CounterVerdict = 'allowed' | 'denied' | 'would-deny';

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
  /** The one workload this token may enrol (re-enrol, replacing its agent); null: any new one. */
  workload: string | null;
  /** What a host enrolled with it may be; null: unrestricted (new workloads only). */
  scope: EnrollmentScope | null;
}

export interface CounterRow {
  workload: string;
  ruleId: string;
  direction: CounterDirection;
  verdict: CounterVerdict;
  packets: number;
  bytes: number;
}

export interface TelemetryBatch {
  counters: Omit<CounterRow, 'workload'>[];
  flows?: FlowDelta[];
  events?: ReportedEvent[];
  /** Events the control plane records about this batch (TELEMETRY_REJECTED), not the agent's. */
  notices?: ReportedEvent[];
}

export interface FleetStore {
  createAgent(a: { id: string; workload: string; hostname: string; certSerial: string }): void;
  getAgent(id: string): AgentRecord | undefined;
  /** All agents by workload and id, or one workload's by id. */
  listAgents(workload?: string): AgentRecord[];
  revokeAgent(id: string): void;
  /**
   * The agent's version, and now as its last_seen: written behind, with every other Hello of
   * this event-loop turn, in one transaction. If that write fails, `onFailed` is called with the
   * error for each Hello it held (and for nothing else).
   */
  recordHello(id: string, version: string, onFailed: (err: unknown) => void): void;
  /** Writes the Hellos not written yet (before the database closes). */
  flushHellos(): void;
  /** Records an agent's ack: false, and nothing recorded, when it is unknown or revoked. */
  recordAck(
    id: string,
    ack: { revision: number; hash: string; error: string; applyMicros: number },
  ): boolean;
  /** Adds a telemetry batch once: false (and no change) when seq was already counted. */
  addTelemetry(agentId: string, seq: number, batch: TelemetryBatch): boolean;

  listCounters(filter?: { workload?: string; ruleId?: string }): CounterRow[];
  /** A workload's counters (call inside the workload delete). */
  deleteCounters(workload: string): void;

  createEnrollmentToken(t: {
    id: string;
    tokenHash: string;
    labels: Labels;
    mode: WorkloadMode;
    expiresAt: string;
    maxUses: number | null;
    workload: string | null;
    scope: EnrollmentScope | null;
  }): void;
  findEnrollmentToken(tokenHash: string): EnrollmentTokenRecord | undefined;
  getEnrollmentToken(id: string): EnrollmentTokenRecord | undefined;
  listEnrollmentTokens(): EnrollmentTokenRecord[];
  useEnrollmentToken(id: string): void;
  deleteEnrollmentToken(id: string): boolean;
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
  workload: r.workload === null ? null : String(r.workload),
  scope: r.scope === null ? null : parse(r.scope),
});

export function createSqliteFleetStore(d: SqliteDatabase, sink: TelemetrySink): FleetStore {
  const { db } = d;
  const insertAgent = db.prepare(
    'INSERT INTO agents (id, workload, hostname, cert_serial, created_at) VALUES (?, ?, ?, ?, ?)',
  );
  const agentById = db.prepare<Row>('SELECT * FROM agents WHERE id = ?');
  const allAgents = db.prepare<Row>('SELECT * FROM agents ORDER BY workload, id');
  const agentsOf = db.prepare<Row>('SELECT * FROM agents WHERE workload = ? ORDER BY id');
  const revoke = db.prepare('UPDATE agents SET revoked = 1 WHERE id = ?');
  const hello = db.prepare('UPDATE agents SET version = ?, last_seen = ? WHERE id = ?');
  // A reconnect storm brings thousands of Hellos within seconds; a commit each was ~0.1 ms of
  // CPU. setImmediate runs before the event loop reads more I/O, so whatever is served after
  // this turn (the agents list, an ack's own last_seen) sees them written.
  const hellos = new Map<string, { version: string; onFailed: (err: unknown) => void }>();
  const flushHellos = () => {
    if (hellos.size === 0) return;
    const batch = [...hellos];
    hellos.clear();
    const at = d.iso();
    try {
      d.tx(() => {
        for (const [id, h] of batch) hello.run(h.version, at, id);
      });
    } catch (err) {
      for (const [, h] of batch) h.onFailed(err);
    }
  };
  const applied = db.prepare(
    `UPDATE agents SET applied_revision = ?, applied_hash = ?, last_error = '',
       last_apply_micros = ?, last_seen = ? WHERE id = ? AND revoked = 0`,
  );
  const failed = db.prepare(
    'UPDATE agents SET last_error = ?, last_seen = ? WHERE id = ? AND revoked = 0',
  );
  const telemetryOf = db.prepare<Row>('SELECT workload, telemetry_seq FROM agents WHERE id = ?');
  const counted = db.prepare('UPDATE agents SET telemetry_seq = ?, last_seen = ? WHERE id = ?');
  const addCounter = db.prepare(
    `INSERT INTO counters (workload, rule_id, direction, verdict, packets, bytes)
     VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (workload, rule_id, direction, verdict) DO UPDATE SET
       packets = packets + excluded.packets, bytes = bytes + excluded.bytes`,
  );
  const selectCounters = db.prepare<Row>(
    `SELECT * FROM counters WHERE (@w IS NULL OR workload = @w) AND (@r IS NULL OR rule_id = @r)
     ORDER BY workload, rule_id, direction, verdict`,
  );
  const deleteCounters = db.prepare('DELETE FROM counters WHERE workload = ?');
  const insertToken = db.prepare(
    `INSERT INTO enrollment_tokens (id, token_hash, labels, mode, expires_at, max_uses, created_at,
       workload, scope)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const tokenByHash = db.prepare<Row>('SELECT * FROM enrollment_tokens WHERE token_hash = ?');
  const tokenById = db.prepare<Row>('SELECT * FROM enrollment_tokens WHERE id = ?');
  const allTokens = db.prepare<Row>('SELECT * FROM enrollment_tokens ORDER BY created_at, id');
  const useToken = db.prepare('UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?');
  const deleteToken = db.prepare('DELETE FROM enrollment_tokens WHERE id = ?');

  return {
    createAgent(a) {
      insertAgent.run(a.id, a.workload, a.hostname, a.certSerial, d.iso());
    },
    getAgent(id) {
      const r = agentById.get(id);
      return r && toAgent(r);
    },
    listAgents: (workload) =>
      (workload === undefined ? allAgents.all() : agentsOf.all(workload)).map(toAgent),
    revokeAgent(id) {
      revoke.run(id);
    },
    recordHello(id, version, onFailed) {
      if (hellos.size === 0) setImmediate(flushHellos);
      hellos.set(id, { version, onFailed });
    },
    flushHellos,
    recordAck(id, ack) {
      // A failed apply leaves the previous rules in place, so applied_* stay as they were.
      const done =
        ack.error === ''
          ? applied.run(ack.revision, ack.hash, ack.applyMicros, d.iso(), id)
          : failed.run(ack.error, d.iso(), id);
      return done.changes > 0;
    },
    addTelemetry(agentId, seq, batch) {
      return d.tx(() => {
        const a = telemetryOf.get(agentId);
        if (!a || seq <= Number(a.telemetry_seq)) return false;
        const workload = String(a.workload);
        for (const c of batch.counters) {
          addCounter.run(workload, c.ruleId, c.direction, c.verdict, c.packets, c.bytes);
        }
        sink.recordTelemetry(agentId, workload, batch.flows ?? [], batch.events ?? []);
        if (batch.notices?.length) {
          sink.recordTelemetry(CONTROL_PLANE_EVENT_SOURCE, workload, [], batch.notices);
        }
        counted.run(seq, d.iso(), agentId);
        return true;
      });
    },

    listCounters(filter = {}) {
      return selectCounters
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
    deleteCounters(workload) {
      deleteCounters.run(workload);
    },

    createEnrollmentToken(t) {
      insertToken.run(
        t.id,
        t.tokenHash,
        json(t.labels),
        json(t.mode),
        t.expiresAt,
        t.maxUses,
        d.iso(),
        t.workload,
        t.scope === null ? null : json(t.scope),
      );
    },
    findEnrollmentToken(tokenHash) {
      const r = tokenByHash.get(tokenHash);
      return r && toEnrollment(r);
    },
    getEnrollmentToken(id) {
      const r = tokenById.get(id);
      return r && toEnrollment(r);
    },
    listEnrollmentTokens: () => allTokens.all().map(toEnrollment),
    useEnrollmentToken(id) {
      useToken.run(id);
    },
    deleteEnrollmentToken: (id) => deleteToken.run(id).changes > 0,
  };
}
