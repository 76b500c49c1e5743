// Everything the CLI shows: tables, JSON, YAML, and the one escape of characters that could
// drive a terminal. Knows no command and no REST path.
import { Document, type ToStringOptions, visit } from 'yaml';

export type OutputFormat = 'table' | 'json' | 'yaml';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'json', 'yaml'];

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
}

type Row = Record<string, unknown>;

/**
 * What must not reach a terminal raw: C0 controls but tab and newline (ESC starts colour,
 * cursor, title and clipboard sequences; CR and BS overwrite what was printed), DEL, C1
 * controls (U+009B is a one-character CSI) and the bidi embeddings, overrides and isolates
 * (U+202A-202E, U+2066-2069) that reorder what a line shows. Strings from agents (flow ends,
 * rule ids, errors, hostnames) and from admins (notes, names, labels) carry them alike.
 */
const UNSAFE_SOURCE =
  '[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]';
const UNSAFE = new RegExp(UNSAFE_SOURCE, 'g');
const HAS_UNSAFE = new RegExp(UNSAFE_SOURCE);

/**
 * Each unsafe character as a visible escape: `\x1b` below DEL, `\u009b` and `\u202e` from DEL
 * on. Both forms are also escapes inside JSON strings (`\u`) and YAML double-quoted scalars,
 * and the result holds no unsafe character, so applying it twice changes nothing. Every
 * byte the CLI writes to stdout or stderr goes through it (run.ts).
 */
export function escapeControls(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x7f
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * Renders `value` as JSON or YAML, or, for `table`, as aligned columns (YAML for non-lists).
 * JSON and YAML parse back to exactly `value`: unsafe characters appear only as escapes.
 */
export function render(value: unknown, format: OutputFormat, columns?: Column<Row>[]): string {
  if (format === 'json') return `${escapeControls(JSON.stringify(value, null, 2))}\n`;
  if (format === 'yaml') return toYamlText(value);
  const rows = Array.isArray(value) ? value : isRow(value) && columns ? [value] : undefined;
  if (!rows?.every(isRow)) return value === undefined ? '' : toYamlText(value);
  return table(rows as Row[], columns ?? inferColumns(rows as Row[]));
}

/**
 * YAML that parses back to `value` and holds no unsafe character raw: a string that has one
 * is written double-quoted, the only YAML style with escapes.
 */
export function toYamlText(value: unknown, options: ToStringOptions = {}): string {
  const doc = new Document(value);
  // Keys are scalars too, so label keys are covered.
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === 'string' && HAS_UNSAFE.test(node.value)) {
        node.type = 'QUOTE_DOUBLE';
      }
    },
  });
  return escapeControls(doc.toString(options));
}

export function table<T>(rows: T[], columns: Column<T>[]): string {
  const lines = align([
    columns.map((c) => c.header),
    ...rows.map((r) => columns.map((c) => cell(c.value(r)))),
  ]);
  return lines.map((line) => `${line}\n`).join('');
}

/**
 * Rows of cells as lines of columns two spaces apart, padded to the widest cell (the last
 * column unpadded). Each cell is one line with controls escaped, so that widths are those
 * shown and no cell can move the cursor or start a line of its own.
 */
export function align(rows: string[][]): string[] {
  const cells = rows.map((row) => row.map((text) => escapeControls(text.replace(/\s+/g, ' '))));
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((row) => row[i]!.length))) ?? [];
  return cells.map((row) =>
    row
      .map((text, i) => (i === row.length - 1 ? text : text.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

/** Scalars as themselves, lists of scalars comma-joined, label maps as k=v, else compact JSON. */
export function cell(value: unknown): string {
  return escapeControls(cellText(value));
}

function cellText(value: unknown): string {
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
