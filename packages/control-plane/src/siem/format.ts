import { isIPv6 } from 'node:net';
import type {
  AgentEvent,
  AggregatedFlow,
  AuditEvent,
  ExportRecord,
  SuppressedReport,
} from './types.js';

/** Private enterprise number in our SD-ID, as the brief fixes it: `bulkhead@32473`. */
export const SD_ID = 'bulkhead@32473';
export const APP_NAME = 'bulkhead';

export interface Identity {
  hostname: string;
  procId: string;
  /** Product version in the CEF header. */
  version: string;
}

const SEVERITY = { warning: 4, notice: 5, info: 6 } as const;

export function msgId(r: ExportRecord): string {
  if (r.kind === 'flow') return r.verdict === 'denied' ? 'FLOW_DENIED' : 'FLOW_WOULD_DENY';
  // An agent's code is its own vocabulary: bounded and made header-safe where it is printed.
  if (r.kind === 'agent-event') return headerField(r.code, 32);
  return r.kind === 'audit' ? 'AUDIT' : 'RATE_LIMITED';
}

function syslogSeverity(r: ExportRecord): number {
  if (r.kind === 'flow') return r.verdict === 'denied' ? SEVERITY.warning : SEVERITY.notice;
  return r.kind === 'audit' ? SEVERITY.info : SEVERITY.warning;
}

/** One RFC 5424 message (no transport framing). */
export function formatSyslog(
  r: ExportRecord,
  facility: number,
  format: 'cef' | 'json',
  id: Identity,
): string {
  const pri = facility * 8 + syslogSeverity(r);
  const params = sdParams(r)
    .map(([k, v]) => `${k}="${escapeSdValue(v)}"`)
    .join(' ');
  const msg = format === 'cef' ? formatCef(r, id.version) : formatJson(r, id.hostname);
  return `<${pri}>1 ${r.at.toISOString()} ${headerField(id.hostname, 255)} ${APP_NAME} ${headerField(id.procId, 128)} ${msgId(r)} [${SD_ID} ${params}] ${msg}`;
}

/** RFC 6587 / 5425 octet counting: the length is in bytes, not characters. */
export function octetFrame(msg: string): Buffer {
  const body = Buffer.from(msg, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `), body]);
}

/** RFC 5424 header fields are PRINTUSASCII without spaces; `-` is the nil value. */
function headerField(v: string, max: number): string {
  const s = v.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return s || '-';
}

export function escapeSdValue(v: string): string {
  return v.replace(/["\\\]]/g, (c) => `\\${c}`);
}

function sdParams(r: ExportRecord): Array<[string, string]> {
  switch (r.kind) {
    case 'flow': {
      const p: Array<[string, string]> = [
        ['verdict', r.verdict],
        ['workload', r.workload],
        ['direction', r.direction],
        ['src', r.src],
        ['dst', r.dst],
        ['proto', r.protocol],
        ['port', String(r.port)],
        ['rule', r.ruleIds.join(',')],
        ['connections', String(r.connections)],
        ['events', String(r.events)],
        ['portCount', String(r.portCount)],
        ['ports', r.ports.join(',')],
      ];
      if (r.srcWorkload) p.push(['srcWorkload', r.srcWorkload]);
      if (r.dstWorkload) p.push(['dstWorkload', r.dstWorkload]);
      return p;
    }
    case 'audit':
      return [
        ['actor', r.actor],
        ['action', r.action],
        ['target', r.target],
      ];
    case 'agent-event':
      return [
        ['workload', r.workload],
        ['agent', r.agentId],
        ['code', r.code],
        ...Object.entries(r.attributes).map(([k, v]): [string, string] => [`attr.${k}`, v]),
      ];
    case 'suppressed':
      return [
        ['suppressed', String(r.rateLimited + r.queueDropped)],
        ['rateLimited', String(r.rateLimited)],
        ['queueDropped', String(r.queueDropped)],
        ['windowMs', String(r.windowMs)],
      ];
  }
}

/** The record as one JSON object; also the line format of file targets. */
export function formatJson(r: ExportRecord, hostname: string): string {
  const base = { host: hostname, msgId: msgId(r) };
  switch (r.kind) {
    case 'flow':
      return JSON.stringify({
        ...base,
        ...r,
        at: r.at.toISOString(),
        firstAt: r.firstAt.toISOString(),
      });
    case 'audit':
      return JSON.stringify({
        ...base,
        ...r,
        at: r.at.toISOString(),
        details: safeJson(r.details),
      });
    case 'agent-event':
      return JSON.stringify({ ...base, ...r, at: r.at.toISOString() });
    case 'suppressed':
      return JSON.stringify({ ...base, ...r, message: suppressedMessage(r) });
  }
}

export function suppressedMessage(r: SuppressedReport): string {
  return `${r.rateLimited + r.queueDropped} events suppressed in the last window (${r.rateLimited} by rate limit, ${r.queueDropped} by queue overflow)`;
}

// Audit details come from callers; a cycle or a BigInt must not take the exporter down.
function safeJson(v: unknown): unknown {
  if (v === undefined) return undefined;
  try {
    return JSON.parse(JSON.stringify(v));
  } catch {
    return '[unserializable]';
  }
}

/** CEF header fields escape `\` and `|`; a newline would end the record, so it becomes a space. */
export function escapeCefHeader(v: string): string {
  return v.replace(/[\\|]/g, (c) => `\\${c}`).replace(/[\r\n]+/g, ' ');
}

/** CEF extension values escape `\`, `=` and line breaks. */
export function escapeCefValue(v: string): string {
  return v.replace(/[\\=\r\n]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\${c}`));
}

export function formatCef(r: ExportRecord, version: string): string {
  const [sig, name, severity, ext] = cefParts(r);
  const extension = ext
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k}=${escapeCefValue(String(v))}`)
    .join(' ');
  return ['CEF:0', 'Bulkhead', 'Bulkhead', version, sig, name, String(severity)]
    .map((f, i) => (i === 0 ? f : escapeCefHeader(f)))
    .concat(extension)
    .join('|');
}

type Ext = Array<[string, string | number | undefined]>;

function cefParts(r: ExportRecord): [string, string, number, Ext] {
  switch (r.kind) {
    case 'flow':
      return r.verdict === 'denied'
        ? ['FLOW_DENIED', 'Flow denied', 7, flowExt(r)]
        : ['FLOW_WOULD_DENY', 'Flow would be denied (monitor mode)', 5, flowExt(r)];
    case 'audit':
      return ['AUDIT', `Audit: ${r.action}`, 3, auditExt(r)];
    case 'agent-event':
      return [msgId(r), `Agent: ${r.code}`, r.code === 'DATAPLANE_TAMPERED' ? 8 : 5, agentExt(r)];
    case 'suppressed':
      return [
        'RATE_LIMITED',
        'Events suppressed',
        5,
        [
          ['cnt', r.rateLimited + r.queueDropped],
          ['msg', suppressedMessage(r)],
          ['rt', r.at.getTime()],
        ],
      ];
  }
}

function flowExt(r: AggregatedFlow): Ext {
  // CEF's src/dst are IPv4 only; IPv6 addresses have their own keys.
  const v6 = (a: string) => isIPv6(a);
  return [
    [v6(r.src) ? 'c6a2' : 'src', r.src],
    [v6(r.dst) ? 'c6a3' : 'dst', r.dst],
    ['dpt', r.port],
    ['proto', r.protocol],
    ['act', r.verdict],
    ['cnt', r.connections],
    ['deviceDirection', r.direction === 'ingress' ? 0 : 1],
    ['cs1Label', 'rule'],
    ['cs1', r.ruleIds.join(',')],
    ['cs2Label', 'workload'],
    ['cs2', r.workload],
    ['cs3Label', 'ports'],
    ['cs3', r.ports.join(',')],
    ['cn1Label', 'distinctPorts'],
    ['cn1', r.portCount],
    ['cn2Label', 'events'],
    ['cn2', r.events],
    ['cs4Label', r.srcWorkload ? 'srcWorkload' : undefined],
    ['cs4', r.srcWorkload],
    ['cs5Label', r.dstWorkload ? 'dstWorkload' : undefined],
    ['cs5', r.dstWorkload],
    ['start', r.firstAt.getTime()],
    ['end', r.at.getTime()],
    ['rt', r.at.getTime()],
  ];
}

function auditExt(r: AuditEvent): Ext {
  const details = safeJson(r.details);
  return [
    ['suser', r.actor],
    ['act', r.action],
    ['cs1Label', 'target'],
    ['cs1', r.target],
    ['msg', details === undefined ? undefined : JSON.stringify(details)],
    ['rt', r.at.getTime()],
  ];
}

function agentExt(r: AgentEvent): Ext {
  return [
    ['rt', r.at.getTime()],
    ['dhost', r.workload],
    ['cs1Label', 'agent'],
    ['cs1', r.agentId],
    ['msg', r.message],
    ['cs2Label', 'attributes'],
    ['cs2', JSON.stringify(r.attributes)],
  ];
}
