export { type Client, type ClientOptions, createClient, type RequestOptions } from './client.js';
export type { Io } from './commands/shared.js';
export {
  type FileDiagnostic,
  loadDocuments,
  type ParsedFiles,
  parseDocuments,
  type ResourceDocument,
  type ResourceKind,
} from './documents.js';
export { type ApiErrorCode, CliError, type CliErrorCode } from './errors.js';
export { type OutputFormat, render } from './output.js';
export { run } from './run.js';
