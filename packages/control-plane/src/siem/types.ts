/** What the control plane hands to the exporter. */
export type SecurityEvent = FlowEvent | AuditEvent | AgentEvent;

export interface FlowEvent {
  kind: 'flow';
  at: Date;
  verdict: 'denied' | 'would-deny';
  workload: string;
  direction: 'ingress' | 'egress';
  src: string;
  dst: string;
  protocol: string;
  port: number;
  ruleId: string;
  connections: number;
  srcWorkload?: string;
  dstWorkload?: string;
}

export interface AuditEvent {
  kind: 'audit';
  at: Date;
  actor: string;
  action: string;
  target: string;
  details?: unknown;
}

/** An event an agent reported about its host (DATAPLANE_TAMPERED, FLOW_TABLE_FULL, ...). */
export interface AgentEvent {
  kind: 'agent-event';
  at: Date;
  workload: string;
  agentId: string;
  code: string;
  message: string;
  attributes: Record<string, string>;
}

/**
 * A flow event after aggregation: the fields of the first event of its window, with totals.
 * `at` is the last event's time, `firstAt` the first's.
 */
export interface AggregatedFlow extends FlowEvent {
  firstAt: Date;
  /** How many flow events were merged into this one. */
  events: number;
  /** Lowest distinct destination ports seen (at most PORT_SAMPLE). */
  ports: number[];
  /** Number of distinct destination ports seen. */
  portCount: number;
  /** Distinct rule ids seen (at most RULE_SAMPLE). */
  ruleIds: string[];
}

/** The exporter's own report that it held events back; never silent. */
export interface SuppressedReport {
  kind: 'suppressed';
  at: Date;
  /** Dropped by the target's token bucket since the last report. */
  rateLimited: number;
  /** Dropped from the target's full queue (oldest first) since the last report. */
  queueDropped: number;
  windowMs: number;
}

/** Everything that goes on the wire. */
export type ExportRecord = AggregatedFlow | AuditEvent | AgentEvent | SuppressedReport;

export type SyslogFormat = 'cef' | 'json';

export type TargetConfig =
  | {
      kind: 'syslog';
      transport: 'udp' | 'tcp' | 'tls';
      host: string;
      port: number;
      format: SyslogFormat;
      /** Syslog facility number (local0 = 16). */
      facility: number;
      /** Path of a PEM CA bundle to verify the server with (tls only; system CAs otherwise). */
      ca?: string;
      url: string;
    }
  | { kind: 'file'; path: string; url: string };

export interface TargetStats {
  target: string;
  /** Messages handed to the socket or file and accepted by it. */
  sent: number;
  rateLimited: number;
  /** Dropped from a full queue or spool, oldest first. */
  queueDropped: number;
  /** Send, connect and write failures. */
  errors: number;
  /** Messages waiting for delivery (not yet confirmed). */
  queued: number;
  connected: boolean;
  /** Messages sent again because their connection died before they were confirmed. */
  resent: number;
  /** Bytes in the target's on-disk spool; 0 without one. */
  spoolBytes: number;
}

export interface ExporterStats {
  /** Events accepted by emit(). */
  received: number;
  /** Flow events merged into an earlier one of their window. */
  aggregated: number;
  /** emit() calls refused (bad event or exporter closed). */
  rejected: number;
  targets: TargetStats[];
}

/** The subset of pino's Logger the exporter uses. */
export interface SiemLogger {
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
}
