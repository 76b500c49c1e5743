// Policy administration's tables: workloads (live) and the draft's IP lists, services and
// policies, each stored as the JSON body the admin PUT with a write counter (`version`). The
// workloads are also held in memory, parsed and frozen (this store is their only writer), so
// reading all of them costs what changed since the last read, not a parse of every row. Must not
// know revisions, agents or flows.
import type { Workload } from '@bulkhead/policy';
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';

export type ResourceKind = 'ip_lists' | 'services' | 'policies';

/** An address change an agent asked for that waits for an admin (fleet decides what waits). */
export interface PendingAddresses {
  addresses: string[];
  agentId: string;
  requestedAt: string;
}

/** An admin's release: the next enrolment under the workload's name may take it. */
export interface WorkloadRelease {
  at: string;
  actor: string;
  note: string;
}

/**
 * What an agent may claim for its workload (docs/SECURITY.md): address ranges its claims may
 * move in without approval, an address change waiting for approval, and a release. Stored with
 * the workload; it never changes what the workload compiles to.
 */
export interface WorkloadTrust {
  addressRanges: string[];
  pending: PendingAddresses | null;
  released: WorkloadRelease | null;
}

export interface WorkloadRecord extends Workload, WorkloadTrust {
  createdAt: string;
  updatedAt: string;
  /** 1 when created, +1 per write (If-Match). */
  version: number;
}

export type WorkloadOrigin = Pick<Workload, 'labels' | 'mode'> & { createdAt: string };

export interface Versioned<T> {
  body: T;
  version: number;
}

export interface PolicyAdminStore {
  listWorkloads(): WorkloadRecord[];
  getWorkload(name: string): WorkloadRecord | undefined;
  /** Address -> the workload holding it, for those of `addresses` held by a workload but `except`. */
  addressOwners(addresses: readonly string[], except: string): Map<string, string>;
  /** Creates (version 1) or replaces (version + 1). */
  upsertWorkload(w: Workload): void;
  /** Sets the given trust fields of an existing workload (version + 1). */
  setWorkloadTrust(name: string, trust: Partial<WorkloadTrust>): void;
  /**
   * The labels and mode the workload had when it was created (they apply in every revision that
   * does not hold it), with its creation time.
   */
  getOrigin(name: string): WorkloadOrigin | undefined;
  /** No workload was created after this time (a deleted one may have been the last). */
  createdUpTo(): string;
  /** The row only (agents go by foreign key); Stores.deleteWorkload removes the rest. */
  deleteWorkload(name: string): boolean;

  /** Bodies in name order, frozen and shared by listings while unchanged. */
  listResources<T>(kind: ResourceKind): T[];
  getResource<T>(kind: ResourceKind, name: string): T | undefined;
  /** Every object of a kind with its version, by name. */
  listVersioned<T>(kind: ResourceKind): Versioned<T>[];
  getVersioned<T>(kind: ResourceKind, name: string): Versioned<T> | undefined;
  /** Creates (version 1) or replaces (version + 1); returns the new version. */
  putResource(kind: ResourceKind, name: string, body: unknown): number;
  /**
   * Makes a kind hold exactly `bodies` (discard, rollback). Objects whose body changes count
   * a write; unchanged ones keep their version, so an editor holding them is not refused.
   */
  replaceResources(kind: ResourceKind, bodies: { name: string }[]): void;
  deleteResource(kind: ResourceKind, name: string): boolean;
}

const KINDS: readonly ResourceKind[] = ['ip_lists', 'services', 'policies'];

/** A row as kept in memory: the record and its origin (frozen: readers share them). */
type Held = { record: WorkloadRecord; origin: WorkloadOrigin };

const toWorkload = (r: Row): WorkloadRecord => ({
  name: String(r.name),
  addresses: parse(r.addresses),
  labels: parse(r.labels),
  mode: parse(r.mode),
  addressRanges: parse(r.address_ranges),
  pending: r.pending_addresses === null ? null : parse(r.pending_addresses),
  released: r.released === null ? null : parse(r.released),
  createdAt: String(r.created_at),
  updatedAt: String(r.updated_at),
  version: Number(r.version),
});

/** SQLite's `ORDER BY name` (names are ASCII, so code units order them as bytes do). */
const byName = (a: { name: string }, b: { name: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** `v` and everything in it frozen (a parsed JSON value). */
function frozen<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) frozen(x);
    Object.freeze(v);
  }
  return v;
}

function held(r: Row): Held {
  const record = toWorkload(r);
  for (const v of [record.addresses, record.labels, record.mode, record.addressRanges]) {
    Object.freeze(v);
  }
  const origin: WorkloadOrigin = {
    labels: Object.freeze(parse<Workload['labels']>(r.initial_labels)),
    mode: Object.freeze(parse<Workload['mode']>(r.initial_mode)),
    createdAt: String(r.created_at),
  };
  return { record: Object.freeze(record), origin: Object.freeze(origin) };
}

export function createSqlitePolicyAdminStore(d: SqliteDatabase): PolicyAdminStore {
  const { db } = d;
  const allWorkloads = db.prepare<Row>('SELECT * FROM workloads ORDER BY name');
  const workloadByName = db.prepare<Row>('SELECT * FROM workloads WHERE name = ?');
  const upsertWorkload = db.prepare(
    `INSERT INTO workloads (name, addresses, labels, mode, created_at, updated_at,
       initial_labels, initial_mode)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET addresses = excluded.addresses,
       labels = excluded.labels, mode = excluded.mode, updated_at = excluded.updated_at,
       version = workloads.version + 1`,
  );
  const setTrust = db.prepare(
    `UPDATE workloads SET address_ranges = ?, pending_addresses = ?, released = ?, updated_at = ?,
       version = version + 1 WHERE name = ?`,
  );
  const deleteWorkload = db.prepare('DELETE FROM workloads WHERE name = ?');
  const owners = db.prepare<Row>(
    `SELECT address, workload FROM workload_addresses
     WHERE address IN (SELECT value FROM json_each(?)) AND workload <> ?`,
  );

  // The table name is one of KINDS, never input.
  const resources = new Map(
    KINDS.map((kind) => [
      kind,
      {
        list: db.prepare<Row>(`SELECT name, body, version FROM ${kind} ORDER BY name`),
        get: db.prepare<Row>(`SELECT body, version FROM ${kind} WHERE name = ?`),
        put: db.prepare<Row>(
          `INSERT INTO ${kind} (name, body, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at,
             version = ${kind}.version + 1
           RETURNING version`,
        ),
        delete: db.prepare(`DELETE FROM ${kind} WHERE name = ?`),
      },
    ]),
  );
  const statements = (kind: ResourceKind) => resources.get(kind)!;
  /**
   * Each listed body parsed once while its text stays the same (frozen: listings share it), so
   * a draft made from an unchanged row holds the same object as the one before: the stages
   * after it (validation, the revision delta, the publisher) pass over it by identity.
   */
  const parsed = new Map(
    KINDS.map((kind) => [kind, new Map<string, { text: string; body: unknown }>()]),
  );
  function listed<T>(kind: ResourceKind): T[] {
    const rows = statements(kind).list.all();
    const held = parsed.get(kind)!;
    if (held.size > rows.length) held.clear(); // names deleted since
    return rows.map((r) => {
      const [name, text] = [String(r.name), String(r.body)];
      let h = held.get(name);
      if (h?.text !== text) {
        h = { text, body: frozen(parse(text)) };
        held.set(name, h);
      }
      return h.body as T;
    });
  }

  /**
   * The committed rows by name, and the names written since (a transaction that rolled back
   * leaves its names here: they are read from the table until a later commit refreshes them).
   * A write is seen at once by reads in its own transaction, through `written`.
   */
  let committed: Map<string, Held> | undefined;
  let sorted: WorkloadRecord[] | undefined;
  /** The latest creation time among the committed rows since they were read. */
  let createdUpTo = '';
  const later = (h: Held) => {
    if (h.origin.createdAt > createdUpTo) createdUpTo = h.origin.createdAt;
  };
  const written = new Set<string>();
  function rows(): Map<string, Held> {
    if (!committed) {
      committed = new Map(allWorkloads.all().map((r) => [String(r.name), held(r)]));
      committed.forEach(later);
    }
    return committed;
  }
  function fetch(name: string): Held | undefined {
    if (!written.has(name)) return rows().get(name);
    const r = workloadByName.get(name);
    return r && held(r);
  }
  function wrote(name: string): void {
    written.add(name);
    d.afterCommit(() => {
      if (!committed) return written.clear();
      for (const n of written) {
        const r = workloadByName.get(n);
        const h = r && held(r);
        if (h) {
          committed.set(n, h);
          later(h);
        } else committed.delete(n);
        // A rewrite keeps its place in the sorted list; a new or deleted name sorts it again.
        const at = sorted && h ? placeOf(sorted, n) : -1;
        if (at >= 0) sorted![at] = h!.record;
        else sorted = undefined;
      }
      written.clear();
    });
  }
  /** Where `name` is in `list` (sorted by name), or -1. */
  function placeOf(list: readonly WorkloadRecord[], name: string): number {
    let [lo, hi] = [0, list.length - 1];
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const n = list[mid]!.name;
      if (n === name) return mid;
      if (n < name) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
  function listWorkloads(): WorkloadRecord[] {
    sorted ??= [...rows().values()].map((h) => h.record).sort(byName);
    const list = [...sorted];
    // Usually the names written are rewritten, not created or deleted: replaced in place.
    let replaced = 0;
    for (const name of written) {
      const at = placeOf(list, name);
      const h = at < 0 ? undefined : fetch(name);
      if (!h) break;
      list[at] = h.record;
      replaced++;
    }
    if (replaced === written.size) return list;
    const now = new Map<string, WorkloadRecord>();
    for (const name of written) {
      const h = fetch(name);
      if (h) now.set(name, h.record);
    }
    const out = sorted.flatMap((w) => {
      const h = now.get(w.name);
      now.delete(w.name);
      return written.has(w.name) ? (h ? [h] : []) : [w];
    });
    if (now.size === 0) return out;
    return [...out, ...now.values()].sort(byName);
  }

  return {
    listWorkloads,
    getWorkload: (name) => fetch(name)?.record,
    addressOwners(addresses, except) {
      const rows = owners.all(json(addresses), except);
      return new Map(rows.map((r) => [String(r.address), String(r.workload)]));
    },
    upsertWorkload(w) {
      const t = d.iso();
      const [labels, mode] = [json(w.labels), json(w.mode)];
      upsertWorkload.run(w.name, json(w.addresses), labels, mode, t, t, labels, mode);
      wrote(w.name);
    },
    setWorkloadTrust(name, trust) {
      const r = fetch(name)?.record;
      if (!r) return;
      const t = { ...r, ...trust };
      const nullable = (v: unknown) => (v === null ? null : json(v));
      setTrust.run(json(t.addressRanges), nullable(t.pending), nullable(t.released), d.iso(), name);
      wrote(name);
    },
    getOrigin: (name) => fetch(name)?.origin,
    createdUpTo() {
      rows();
      let upTo = createdUpTo;
      for (const name of written) {
        const at = fetch(name)?.origin.createdAt;
        if (at !== undefined && at > upTo) upTo = at;
      }
      return upTo;
    },
    deleteWorkload(name) {
      const deleted = deleteWorkload.run(name).changes > 0;
      if (deleted) wrote(name);
      return deleted;
    },

    listResources: listed,
    getResource<T>(kind: ResourceKind, name: string) {
      const r = statements(kind).get.get(name);
      return r && parse<T>(r.body);
    },
    listVersioned: <T>(kind: ResourceKind) =>
      statements(kind)
        .list.all()
        .map((r) => ({ body: parse<T>(r.body), version: Number(r.version) })),
    getVersioned<T>(kind: ResourceKind, name: string) {
      const r = statements(kind).get.get(name);
      return r && { body: parse<T>(r.body), version: Number(r.version) };
    },
    putResource(kind, name, body) {
      return Number(statements(kind).put.get(name, json(body), d.iso())?.version);
    },
    replaceResources(kind, bodies) {
      const s = statements(kind);
      const current = new Map(s.list.all().map((r) => [String(r.name), String(r.body)]));
      const keep = new Set(bodies.map((b) => b.name));
      for (const name of current.keys()) if (!keep.has(name)) s.delete.run(name);
      for (const b of bodies)
        if (current.get(b.name) !== json(b)) s.put.get(b.name, json(b), d.iso());
    },
    deleteResource: (kind, name) => statements(kind).delete.run(name).changes > 0,
  };
}
