export { SiemError, type SiemErrorCode } from './errors.js';
export {
  createEventExporter,
  DEFAULT_AGGREGATE_WINDOW_MS,
  DEFAULT_BURST,
  DEFAULT_RATE_PER_SECOND,
  DEFAULT_SPOOL_MAX_BYTES,
  type EventExporter,
  type EventExporterOptions,
} from './exporter.js';
export { parseTarget } from './target-url.js';
export type {
  AuditEvent,
  ExporterStats,
  FlowEvent,
  SecurityEvent,
  SiemLogger,
  TargetConfig,
  TargetStats,
} from './types.js';
