import type { Client } from './client.js';
import type { ResourceDocument, ResourceKind } from './documents.js';
import { CliError } from './errors.js';
import { toYamlText } from './output.js';

type Row = Record<string, unknown>;

export interface KindFacts {
  /** `policy` in `policy/web`. */
  word: string;
  /** `/v1/policies`. */
  path: string;
  /** The file `export` writes. */
  file: string;
}

export const KIND_FACTS: Record<ResourceKind, KindFacts> = {
  IpList: { word: 'ip-list', path: '/v1/ip-lists', file: 'ip-lists.yaml' },
  Service: { word: 'service', path: '/v1/services', file: 'services.yaml' },
  Policy: { word: 'policy', path: '/v1/policies', file: 'policies.yaml' },
  Workload: { word: 'workload', path: '/v1/workloads', file: 'workloads.yaml' },
};

/** Policies name services and ip lists, so they go first; workloads are never pruned. */
export const PRUNE_ORDER: readonly ResourceKind[] = ['Policy', 'Service', 'IpList'];

/**
 * Fields the server keeps beside what the admin wrote. Resources keep every other field, so a
 * field the model gains later survives export (a server field missing here shows up in `diff`
 * instead of vanishing silently).
 */
const SERVER_FIELDS = new Set(['createdAt', 'updatedAt', 'createdBy', 'updatedBy', 'version']);

/** What a file would say of a server object: server-only fields gone; workloads as name, labels, mode. */
export function toDocumentBody(kind: ResourceKind, item: Row): Row {
  if (kind === 'Workload') {
    const body: Row = { name: item.name };
    if (item.labels !== undefined) body.labels = item.labels;
    if (item.mode !== undefined) body.mode = item.mode;
    return body;
  }
  return Object.fromEntries(Object.entries(item).filter(([k]) => !SERVER_FIELDS.has(k)));
}

export type ChangeAction = 'create' | 'update' | 'unchanged' | 'delete';

export interface Change {
  kind: ResourceKind;
  name: string;
  action: ChangeAction;
  /** The object in document form on the server now (absent for create). */
  before?: Row;
  /** The object in document form after apply (absent for delete). */
  after?: Row;
  /** Top-level fields that differ (update only). */
  fields: string[];
}

export function objectPath(kind: ResourceKind, name: string): string {
  return `${KIND_FACTS[kind].path}/${encodeURIComponent(name)}`;
}

/** The label of an object in messages: `policy/web`. */
export function label(kind: ResourceKind, name: string): string {
  return `${KIND_FACTS[kind].word}/${name}`;
}

/** Runs `fn`, naming the object in any CliError it throws (`policy/web: ...`). */
export async function labelled<T>(
  kind: ResourceKind,
  name: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    const prefix = label(kind, name);
    // The server's CONFLICT message already names the object.
    const message = err.message.startsWith(prefix) ? err.message : `${prefix}: ${err.message}`;
    throw new CliError(err.code, message, {
      status: err.status,
      details: err.details,
      response: err.response,
      cause: err,
    });
  }
}

/**
 * What applying `doc` does to `current` (the server's object, undefined when it has none).
 * A workload document patches: its labels replace the set, its mode merges per direction.
 */
export function planOne(doc: ResourceDocument, current: Row | undefined): Change {
  const base = { kind: doc.kind, name: doc.name };
  if (current === undefined) {
    if (doc.kind === 'Workload') {
      throw new CliError(
        'NOT_FOUND',
        'no such workload (workloads appear when their agent enrols)',
      );
    }
    return { ...base, action: 'create', after: doc.body, fields: [] };
  }
  const before = toDocumentBody(doc.kind, current);
  let after: Row;
  if (doc.kind === 'Workload') {
    after = { ...before };
    if ('labels' in doc.body) after.labels = doc.body.labels;
    if ('mode' in doc.body) after.mode = { ...(before.mode as Row), ...(doc.body.mode as Row) };
  } else {
    after = { name: doc.name, ...doc.body };
  }
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  const fields = keys.filter((k) => canonical(before[k]) !== canonical(after[k])).sort();
  return { ...base, action: fields.length === 0 ? 'unchanged' : 'update', before, after, fields };
}

/** Deletions for objects on the server that no document names, in PRUNE_ORDER. */
export function planPrune(documents: ResourceDocument[], state: ServerState): Change[] {
  const wanted = new Set(documents.map((d) => `${d.kind}/${d.name}`));
  const out: Change[] = [];
  for (const kind of PRUNE_ORDER) {
    for (const [name, item] of state[kind]) {
      if (!wanted.has(`${kind}/${name}`)) {
        out.push({ kind, name, action: 'delete', before: toDocumentBody(kind, item), fields: [] });
      }
    }
  }
  return out;
}

export type ServerState = Record<ResourceKind, Map<string, Row>>;

/** Lists the given kinds (the others stay empty), each keyed by name. */
export async function fetchState(
  client: Client,
  kinds: readonly ResourceKind[],
): Promise<ServerState> {
  const state: ServerState = {
    IpList: new Map(),
    Service: new Map(),
    Policy: new Map(),
    Workload: new Map(),
  };
  for (const kind of kinds) {
    const items = await client.request<Row[]>('GET', KIND_FACTS[kind].path);
    if (!Array.isArray(items)) {
      throw new CliError('BAD_RESPONSE', `GET ${KIND_FACTS[kind].path}: expected a list`);
    }
    for (const item of items) state[kind].set(String(item.name), item);
  }
  return state;
}

/**
 * One kind as multi-document YAML, in name order, keys in a fixed order: the same state
 * always gives the same bytes, whatever order the server or an earlier file used.
 */
export function formatDocuments(kind: ResourceKind, items: Row[]): string {
  return [...items]
    .sort((a, b) => compare(String(a.name), String(b.name)))
    .map((item) => toYaml({ kind, ...toDocumentBody(kind, item) }))
    .join('---\n');
}

export function toYaml(value: unknown): string {
  return toYamlText(orderKeys(value, false), { lineWidth: 0 });
}

// Model fields in the order people write them; anything else follows, sorted.
const KEY_ORDER = [
  'kind',
  'name',
  'description',
  'labels',
  'mode',
  'scope',
  'ingress',
  'egress',
  'cidrs',
  'except',
  'ports',
  'action',
  'peers',
  'services',
  'selector',
  'ipList',
  'cidr',
  'protocol',
  'port',
  'endPort',
  'matchLabels',
  'matchExpressions',
  'key',
  'operator',
  'values',
];
const RANK = new Map(KEY_ORDER.map((k, i) => [k, i]));

// Label maps are user data: plain sorted keys, never the model order (a label may be `name`).
const USER_MAPS = new Set(['labels', 'matchLabels']);

function orderKeys(value: unknown, userMap: boolean): unknown {
  if (Array.isArray(value)) return value.map((v) => orderKeys(v, false));
  if (value === null || typeof value !== 'object') return value;
  const rank = (k: string) => (userMap ? KEY_ORDER.length : (RANK.get(k) ?? KEY_ORDER.length));
  const entries = Object.entries(value as Row).filter(([, v]) => v !== undefined);
  entries.sort(([a], [b]) => rank(a) - rank(b) || compare(a, b));
  return Object.fromEntries(entries.map(([k, v]) => [k, orderKeys(v, USER_MAPS.has(k))]));
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** JSON with sorted keys, so that equal objects compare equal whatever their key order. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => compare(a, b)))
      : v,
  );
}

/** `diff` text of one change: a header line, and for an update a compact unified diff. */
export function formatChange(change: Change): string {
  const head = label(change.kind, change.name);
  switch (change.action) {
    case 'create':
      return `+ ${head}\n`;
    case 'delete':
      return `- ${head}\n`;
    case 'unchanged':
      return '';
    case 'update': {
      const before = toYaml({ kind: change.kind, ...change.before })
        .trimEnd()
        .split('\n');
      const after = toYaml({ kind: change.kind, ...change.after })
        .trimEnd()
        .split('\n');
      const hunks = unifiedDiff(before, after, 2).map((l) => `    ${l}\n`);
      return `~ ${head} (${change.fields.join(', ')})\n${hunks.join('')}`;
    }
  }
}

/**
 * Hunks of a line diff (longest common subsequence; objects are small) with `context` lines
 * around each change, in the `@@ -a,b +c,d @@` form.
 */
export function unifiedDiff(a: string[], b: string[], context: number): string[] {
  // lcs[i][j] = length of the LCS of a[i..] and b[j..].
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] =
        a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  type Op = { tag: ' ' | '-' | '+'; text: string; ai: number; bi: number };
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      ops.push({ tag: ' ', text: a[i]!, ai: i++, bi: j++ });
    } else if (i < a.length && (j === b.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      // Removals before additions, as diff(1) prints them.
      ops.push({ tag: '-', text: a[i]!, ai: i++, bi: j });
    } else {
      ops.push({ tag: '+', text: b[j]!, ai: i, bi: j++ });
    }
  }
  const out: string[] = [];
  let k = 0;
  while (k < ops.length) {
    if (ops[k]!.tag === ' ') {
      k++;
      continue;
    }
    // Grow the hunk while the next change is within 2 * context equal lines.
    const start = Math.max(0, k - context);
    let end = k;
    for (let gap = 0; end < ops.length && gap <= 2 * context; end++) {
      gap = ops[end]!.tag === ' ' ? gap + 1 : 0;
    }
    while (end > k && ops[end - 1]!.tag === ' ') end--;
    end = Math.min(ops.length, end + context);
    const hunk = ops.slice(start, end);
    const aLen = hunk.filter((o) => o.tag !== '+').length;
    const bLen = hunk.filter((o) => o.tag !== '-').length;
    out.push(`@@ -${hunk[0]!.ai + 1},${aLen} +${hunk[0]!.bi + 1},${bLen} @@`);
    for (const o of hunk) out.push(`${o.tag}${o.text}`);
    k = end;
  }
  return out;
}
