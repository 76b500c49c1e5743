import { stringify } from 'yaml';

export type OutputFormat = 'table' | 'json' | 'yaml';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'json', 'yaml'];

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
}

type Row = Record<string, unknown>;

/** Renders `value` as JSON or YAML, or, for `table`, as aligned columns (YAML for non-lists). */
export function render(value: unknown, format: OutputFormat, columns?: Column<Row>[]): string {
  if (format === 'json') return `${JSON.stringify(value, null, 2)}\n`;
  if (format === 'yaml') return stringify(value);
  const rows = Array.isArray(value) ? value : isRow(value) && columns ? [value] : undefined;
  if (!rows?.every(isRow)) return value === undefined ? '' : stringify(value);
  return table(rows as Row[], columns ?? inferColumns(rows as Row[]));
}

export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = [
    columns.map((c) => c.header),
    ...rows.map((r) => columns.map((c) => cell(c.value(r)))),
  ];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => line[i]!.length)));
  return cells
    .map((line) =>
      line
        .map((text, i) => (i === line.length - 1 ? text : text.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join('');
}

/** Scalars as themselves, lists of scalars comma-joined, label maps as k=v, else compact JSON. */
export function cell(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-';
  if (typeof value === 'string') return value.replace(/\s+/g, ' ');
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value) && value.every((v) => typeof v !== 'object' || v === null)) {
    return value.length === 0 ? '-' : value.map(String).join(',');
  }
  if (isRow(value) && Object.values(value).every((v) => typeof v === 'string')) {
    const pairs = Object.entries(value).map(([k, v]) => `${k}=${v}`);
    return pairs.length === 0 ? '-' : pairs.join(',');
  }
  return JSON.stringify(value);
}

function inferColumns(rows: Row[]): Column<Row>[] {
  const keys: string[] = [];
  for (const row of rows) for (const k of Object.keys(row)) if (!keys.includes(k)) keys.push(k);
  return keys.map((k) => ({ header: headerFor(k), value: (r) => r[k] }));
}

/** `appliedRevision` -> `APPLIED REVISION`. */
function headerFor(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/[-_]/g, ' ')
    .toUpperCase();
}

function isRow(value: unknown): value is Row {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
