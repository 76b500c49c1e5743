// The SQLite implementation of every domain's store, on one database file. Wiring only: each
// store's queries live in its domain's folder.
import { type AccessStore, type AuditEntry, createSqliteAccessStore } from '../access/store.js';
import { createSqliteFleetStore, type FleetStore } from '../fleet/store.js';
import { createSqlitePolicyAdminStore, type PolicyAdminStore } from '../policy-admin/store.js';
import { createSqliteRolloutStore, type RolloutStore } from '../revisions/rollout-store.js';
import { createSqliteRevisionStore, type RevisionStore } from '../revisions/store.js';
import {
  createSqliteVisibilityStore,
  type FlowLimitOptions,
  type VisibilityStore,
} from '../visibility/store.js';
import { openDatabase, type Transactor } from './database.js';

export { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';

export interface StoreOptions extends FlowLimitOptions {
  /** File path, or ':memory:' for tests. */
  path: string;
  /** Clock for timestamps and flow retention; tests pin it. */
  now?: () => Date;
  /** Called with each audit entry once its transaction committed (SIEM export). */
  onAudit?: (entry: AuditEntry) => void;
}

export interface Stores extends Transactor {
  access: AccessStore;
  policy: PolicyAdminStore;
  revisions: RevisionStore;
  rollouts: RolloutStore;
  fleet: FleetStore;
  visibility: VisibilityStore;
  /** A workload and everything every domain keeps of it (agents, counters, flows, events). */
  deleteWorkload(name: string): boolean;
  schemaVersion(): number;
  close(): void;
}

export function createSqliteStores(options: StoreOptions): Stores {
  const d = openDatabase(options.path, options.now);
  const visibility = createSqliteVisibilityStore(d, options);
  const policy = createSqlitePolicyAdminStore(d);
  const fleet = createSqliteFleetStore(d, visibility);
  return {
    tx: d.tx,
    deleteWorkload(name) {
      // Agents go by foreign key; counters, flows and events hold no key.
      return d.tx(() => {
        fleet.deleteCounters(name);
        visibility.deleteWorkload(name);
        return policy.deleteWorkload(name);
      });
    },
    schemaVersion: d.schemaVersion,
    close() {
      fleet.flushHellos();
      d.close();
    },
    access: createSqliteAccessStore(d, options.onAudit),
    policy,
    revisions: createSqliteRevisionStore(d),
    rollouts: createSqliteRolloutStore(d),
    fleet,
    visibility,
  };
}
