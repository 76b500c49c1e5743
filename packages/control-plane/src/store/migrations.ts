// The one migration list of the control plane's database, for every domain's tables.
// Append only: a released entry never changes, since databases in the field ran it.

// Flows (visibility/flow-store.ts): one row per distinct dependency and its hourly buckets.
const FLOWS = `
  CREATE TABLE flows (
    id INTEGER PRIMARY KEY,
    workload TEXT NOT NULL,
    direction TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    protocol INTEGER NOT NULL,
    port INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    connections INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    UNIQUE (workload, direction, src, dst, protocol, port, verdict, rule_id)
  );
  CREATE INDEX flows_last_seen ON flows (last_seen);
  CREATE INDEX flows_first_seen ON flows (first_seen);
  CREATE TABLE flow_hours (
    flow_id INTEGER NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
    hour TEXT NOT NULL,
    connections INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (flow_id, hour)
  ) WITHOUT ROWID;
  CREATE INDEX flow_hours_hour ON flow_hours (hour);
`;

// Each entry moves the schema from version i to i+1; applied in one transaction with the
// user_version bump, so a crash never leaves a half-migrated database.
export const MIGRATIONS: readonly string[] = [
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
  `${FLOWS}
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
  // 4: trust boundary (issue 10): what an agent may claim. A workload's address ranges (claims
  // inside them apply), its address change awaiting an admin (JSON or NULL), its release (JSON or
  // NULL: the next enrolment may take it); an enrolment token's bound workload and scope (JSON).
  `
  ALTER TABLE workloads ADD COLUMN address_ranges TEXT NOT NULL DEFAULT '[]';
  ALTER TABLE workloads ADD COLUMN pending_addresses TEXT;
  ALTER TABLE workloads ADD COLUMN released TEXT;
  ALTER TABLE enrollment_tokens ADD COLUMN workload TEXT;
  ALTER TABLE enrollment_tokens ADD COLUMN scope TEXT;
  `,
  // 5: incremental pipeline (issue 8): desired agent states live in the control plane's memory,
  // derived from the provisioned policy at start; encoded RuleSets are no longer stored.
  `
  DROP TABLE rulesets;
  `,
  // 6: staged rollouts (issue 11): one row per rollout, its waves and progress; a restarted
  // control plane resumes the active one from here.
  `
  CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    base_revision INTEGER NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  `,
  // 7: fleet at scale (issue 9): which workload holds an address, without reading every workload
  // per enrolment or claim. Kept by triggers from workloads.addresses (canonical text: every
  // writer canonicalises), so no write path can forget it.
  `
  CREATE TABLE workload_addresses (
    address TEXT NOT NULL,
    workload TEXT NOT NULL REFERENCES workloads(name) ON DELETE CASCADE,
    PRIMARY KEY (address, workload)
  ) WITHOUT ROWID;
  CREATE INDEX workload_addresses_workload ON workload_addresses (workload);
  INSERT OR IGNORE INTO workload_addresses
    SELECT j.value, w.name FROM workloads w, json_each(w.addresses) j;
  CREATE TRIGGER workload_addresses_insert AFTER INSERT ON workloads BEGIN
    INSERT OR IGNORE INTO workload_addresses SELECT value, NEW.name FROM json_each(NEW.addresses);
  END;
  CREATE TRIGGER workload_addresses_update AFTER UPDATE OF addresses ON workloads BEGIN
    DELETE FROM workload_addresses WHERE workload = OLD.name;
    INSERT OR IGNORE INTO workload_addresses SELECT value, NEW.name FROM json_each(NEW.addresses);
  END;
  `,
  // 8: labels and modes are drafted and revisioned (issue 11): a workload's labels and mode
  // columns hold the draft; what it had when it first appeared stays for the states of
  // revisions it is not part of. Until now labels and modes were live, so they are the initial.
  `
  ALTER TABLE workloads ADD COLUMN initial_labels TEXT NOT NULL DEFAULT '{}';
  ALTER TABLE workloads ADD COLUMN initial_mode TEXT NOT NULL DEFAULT '{}';
  UPDATE workloads SET initial_labels = labels, initial_mode = mode;
  `,
  // 9: a one-workload provision stores what it changes (issue 8): a revision's snapshot may be
  // a delta against the revision before it (revisions/snapshot-delta.ts); rows stored so far
  // are whole.
  `
  ALTER TABLE revisions ADD COLUMN delta INTEGER NOT NULL DEFAULT 0;
  `,
  // 10: telemetry ingest at 50k flows/s (issue 9): no query can use an index on first_seen (its
  // one filter is `@newSince IS NULL OR first_seen >= @newSince`, which the planner never takes
  // to an index), while every new flow paid for its entry.
  `
  DROP INDEX IF EXISTS flows_first_seen;
  `,
  // 11: \`plan\` at 1M flow rows (issue 8): impact analysis keeps what it read and asks only
  // for the rows written since (visibility/flow-store.ts stamps each write). No index: the
  // question scans the table once per plan, while an index would cost every telemetry write.
  `
  ALTER TABLE flows ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;
