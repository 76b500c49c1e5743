// The rollouts table: each staged rollout's revisions, status and progress (waves, the wave
// watched, rolled-back workloads, the hold), so a restarted control plane resumes the active
// one. Must not decide transitions nor publish (revisions/rollout.ts does).
import type { RolloutView } from '@bulkhead/api';
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';

export const ACTIVE_STATUSES = ['running', 'paused', 'held'] as const;

export interface RolloutStore {
  /** Inserts a rollout (id, createdAt and updatedAt are set here); returns it. */
  add(r: Omit<RolloutView, 'id' | 'createdAt' | 'updatedAt'>): RolloutView;
  /** Writes a rollout's status and progress; returns it with updatedAt set. */
  update(r: RolloutView): RolloutView;
  /** The running, paused or held rollout (at most one). */
  active(): RolloutView | undefined;
  /** The newest rollout, whatever its status. */
  latest(): RolloutView | undefined;
  get(id: number): RolloutView | undefined;
}

type Progress = Omit<
  RolloutView,
  'id' | 'revision' | 'baseRevision' | 'note' | 'actor' | 'status' | 'createdAt' | 'updatedAt'
>;

function progress(r: Partial<RolloutView>): Progress {
  const { id, revision, baseRevision, note, actor, status, createdAt, updatedAt, ...p } = r;
  return p as Progress;
}

export function createSqliteRolloutStore(d: SqliteDatabase): RolloutStore {
  const { db } = d;
  const insert = db.prepare(
    `INSERT INTO rollouts (revision, base_revision, note, actor, status, state, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const write = db.prepare(
    'UPDATE rollouts SET status = ?, state = ?, updated_at = ? WHERE id = ?',
  );
  const byId = db.prepare<Row>('SELECT * FROM rollouts WHERE id = ?');
  const active = db.prepare<Row>(
    `SELECT * FROM rollouts WHERE status IN (${ACTIVE_STATUSES.map(() => '?').join(', ')}) ORDER BY id DESC LIMIT 1`,
  );
  const latest = db.prepare<Row>('SELECT * FROM rollouts ORDER BY id DESC LIMIT 1');

  const toView = (r: Row | undefined): RolloutView | undefined =>
    r && {
      id: Number(r.id),
      revision: Number(r.revision),
      baseRevision: Number(r.base_revision),
      note: String(r.note),
      actor: String(r.actor),
      status: String(r.status) as RolloutView['status'],
      ...parse<Progress>(r.state),
      createdAt: String(r.created_at),
      updatedAt: String(r.updated_at),
    };

  const get = (id: number) => toView(byId.get(id));
  return {
    add(r) {
      const at = d.iso();
      const { lastInsertRowid } = insert.run(
        r.revision,
        r.baseRevision,
        r.note,
        r.actor,
        r.status,
        json(progress(r)),
        at,
        at,
      );
      return get(Number(lastInsertRowid))!;
    },
    update(r) {
      write.run(r.status, json(progress(r)), d.iso(), r.id);
      return get(r.id)!;
    },
    active: () => toView(active.get(...ACTIVE_STATUSES)),
    latest: () => toView(latest.get()),
    get,
  };
}
