import type { Client } from './client.js';
import { CliError } from './errors.js';
import { type Column, cell } from './output.js';

type Row = Record<string, unknown>;

export interface KindInfo {
  /** Canonical plural name, as in `bulkhead get <kind>`. */
  name: string;
  path: string;
  /** The server has `GET path/:name`; otherwise one item is found in the list by `key`. */
  getOne: boolean;
  /** The field that identifies an item (and the `:name` of DELETE). */
  key: string;
  deletable: boolean;
  columns?: Column<Row>[];
}

const col = (header: string, value: (r: Row) => unknown): Column<Row> => ({ header, value });
const count = (v: unknown) => (Array.isArray(v) ? v.length : 0);

/** Agent ids are long (UUIDs); eight characters tell them apart on any real fleet. */
export const shortId = (v: unknown) => (typeof v === 'string' ? v.slice(0, 8) : v);

export function formatSelector(selector: unknown): string {
  const s = (selector ?? {}) as {
    matchLabels?: Record<string, string>;
    matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
  };
  const terms = Object.entries(s.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of s.matchExpressions ?? []) {
    if (e.operator === 'Exists') terms.push(e.key);
    else if (e.operator === 'DoesNotExist') terms.push(`!${e.key}`);
    else terms.push(`${e.key} ${e.operator.toLowerCase()} (${(e.values ?? []).join(',')})`);
  }
  return terms.length === 0 ? '(all)' : terms.join(',');
}

function formatPorts(ports: unknown): string {
  if (!Array.isArray(ports)) return cell(ports);
  return ports
    .map((p: { protocol?: string; port?: number; endPort?: number }) => {
      if (p.port === undefined) return p.protocol;
      return `${p.protocol}/${p.port}${p.endPort !== undefined ? `-${p.endPort}` : ''}`;
    })
    .join(',');
}

export const AGENT_COLUMNS: Column<Row>[] = [
  col('ID', (r) => shortId(r.id)),
  col('WORKLOAD', (r) => r.workload),
  col('CONNECTED', (r) => r.connected),
  col('OFFLINE', (r) => r.offline),
  col('APPLIED REV', (r) => r.appliedRevision),
  col('IN SYNC', (r) => r.inSync),
  col('LAST SEEN', (r) => r.lastSeen),
  col('LAST ERROR', (r) => r.lastError),
];

/** `workloads pending`: what the workload has, what its agent asks for. */
export const PENDING_COLUMNS: Column<Row>[] = [
  col('NAME', (r) => r.name),
  col('ADDRESSES', (r) => r.addresses),
  col('PENDING', (r) => (r.pending as Row | null)?.addresses),
  col('AGENT', (r) => shortId((r.pending as Row | null)?.agentId)),
  col('REQUESTED', (r) => (r.pending as Row | null)?.requestedAt),
];

export const COUNTER_COLUMNS: Column<Row>[] = [
  col('WORKLOAD', (r) => r.workload),
  col('RULE', (r) => r.ruleId),
  col('DIRECTION', (r) => r.direction),
  col('VERDICT', (r) => r.verdict),
  col('PACKETS', (r) => r.packets),
  col('BYTES', (r) => r.bytes),
];

/** Attributes vary by code: shown by -o json|yaml. */
export const EVENT_COLUMNS: Column<Row>[] = [
  col('AT', (r) => r.at),
  col('WORKLOAD', (r) => r.workload),
  col('KIND', (r) => r.code),
  col('MESSAGE', (r) => r.message),
];

/** `before`/`after` are whole resources: too wide for a table, shown by -o json|yaml. */
export const AUDIT_COLUMNS: Column<Row>[] = [
  col('ID', (r) => r.id),
  col('AT', (r) => r.at),
  col('ACTOR', (r) => r.actor),
  col('ACTION', (r) => r.action),
  col('TARGET', (r) => r.target),
];

export const REVISION_COLUMNS: Column<Row>[] = [
  col('REV', (r) => r.revision),
  col('AUTHOR', (r) => r.author),
  col('CREATED', (r) => r.createdAt),
  col('NOTE', (r) => r.note),
];

const KINDS: KindInfo[] = [
  {
    name: 'workloads',
    path: '/v1/workloads',
    getOne: true,
    key: 'name',
    deletable: true,
    columns: [
      col('NAME', (r) => r.name),
      col('ADDRESSES', (r) => r.addresses),
      col('LABELS', (r) => r.labels),
      col('INGRESS', (r) => (r.mode as Row | undefined)?.ingress),
      col('EGRESS', (r) => (r.mode as Row | undefined)?.egress),
    ],
  },
  {
    name: 'policies',
    path: '/v1/policies',
    getOne: true,
    key: 'name',
    deletable: true,
    columns: [
      col('NAME', (r) => r.name),
      col('SCOPE', (r) => formatSelector(r.scope)),
      col('INGRESS RULES', (r) => count(r.ingress)),
      col('EGRESS RULES', (r) => count(r.egress)),
    ],
  },
  {
    name: 'services',
    path: '/v1/services',
    getOne: true,
    key: 'name',
    deletable: true,
    columns: [col('NAME', (r) => r.name), col('PORTS', (r) => formatPorts(r.ports))],
  },
  {
    name: 'ip-lists',
    path: '/v1/ip-lists',
    getOne: true,
    key: 'name',
    deletable: true,
    columns: [
      col('NAME', (r) => r.name),
      col('CIDRS', (r) => r.cidrs),
      col('EXCEPT', (r) => r.except),
    ],
  },
  // No columns: `get revision N` shows the whole snapshot; `revisions` is the table.
  { name: 'revisions', path: '/v1/revisions', getOne: true, key: 'revision', deletable: false },
  {
    name: 'agents',
    path: '/v1/agents',
    getOne: false,
    key: 'id',
    deletable: false,
    columns: AGENT_COLUMNS,
  },
  { name: 'tokens', path: '/v1/tokens', getOne: false, key: 'id', deletable: true },
  {
    name: 'enrollment-tokens',
    path: '/v1/enrollment-tokens',
    getOne: false,
    key: 'id',
    deletable: true,
  },
];

const ALIASES: Record<string, string> = {
  workload: 'workloads',
  policy: 'policies',
  service: 'services',
  'ip-list': 'ip-lists',
  iplist: 'ip-lists',
  iplists: 'ip-lists',
  revision: 'revisions',
  agent: 'agents',
  token: 'tokens',
  'enrollment-token': 'enrollment-tokens',
};

export function lookupKind(word: string): KindInfo {
  const name = ALIASES[word.toLowerCase()] ?? word.toLowerCase();
  const kind = KINDS.find((k) => k.name === name);
  if (!kind) {
    throw new CliError(
      'USAGE',
      `unknown kind ${JSON.stringify(word)}: use one of ${KINDS.map((k) => k.name).join(', ')}`,
    );
  }
  return kind;
}

export function itemPath(kind: KindInfo, name: string): string {
  return `${kind.path}/${encodeURIComponent(name)}`;
}

/** Items without a GET-by-name (agents, tokens) are found in the list, by id or id prefix. */
export async function findOne(client: Client, kind: KindInfo, id: string): Promise<unknown> {
  const items = await client.request<Row[]>('GET', kind.path);
  const exact = items.find((i) => i[kind.key] === id);
  if (exact) return exact;
  const matches = items.filter((i) => String(i[kind.key]).startsWith(id));
  if (matches.length === 1) return matches[0];
  if (matches.length > 1) {
    const ids = matches.map((m) => shortId(m[kind.key])).join(', ');
    throw new CliError('USAGE', `${JSON.stringify(id)} matches several ${kind.name}: ${ids}`);
  }
  throw new CliError('NOT_FOUND', `no ${kind.name} with ${kind.key} ${JSON.stringify(id)}`);
}
