import { type ApiErrorCode, CliError } from './errors.js';

export interface ClientOptions {
  /** Base URL of the REST API, e.g. `http://127.0.0.1:8080` (plain HTTP by default). */
  server: string;
  token?: string;
}

export interface Client {
  /** One REST call; resolves to the parsed JSON body (undefined when empty), throws CliError. */
  request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options?: RequestOptions,
  ): Promise<T>;
}

export interface RequestOptions {
  /** Write only if the object is still at this `version` (sent as `If-Match: "<v>"`). */
  ifMatch?: number;
}

const API_CODES: readonly ApiErrorCode[] = [
  'VALIDATION_FAILED',
  'NOT_FOUND',
  'CONFLICT',
  'IMPACT_CONFIRMATION_REQUIRED',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'INTERNAL',
];

// When the body is not the API's error shape (a proxy's HTML page, say), the status decides.
function codeForStatus(status: number): ApiErrorCode {
  switch (status) {
    case 400:
    case 422:
      return 'VALIDATION_FAILED';
    case 401:
      return 'UNAUTHENTICATED';
    case 403:
      return 'FORBIDDEN';
    case 404:
      return 'NOT_FOUND';
    case 409:
      return 'CONFLICT';
    default:
      return 'INTERNAL';
  }
}

function errorFromBody(status: number, statusText: string, body: unknown): CliError {
  const err = (body as { error?: unknown } | undefined)?.error as
    | { code?: unknown; message?: unknown; details?: unknown; [more: string]: unknown }
    | undefined;
  const code = API_CODES.find((c) => c === err?.code) ?? codeForStatus(status);
  const message =
    typeof err?.message === 'string' ? err.message : `HTTP ${status} ${statusText}`.trim();
  const details = Array.isArray(err?.details)
    ? err.details.map((d: { path?: unknown; message?: unknown }) => ({
        path: String(d?.path ?? ''),
        message: String(d?.message ?? ''),
      }))
    : [];
  return new CliError(code, message, { status, details, response: err });
}

export function createClient(options: ClientOptions): Client {
  const base = options.server.replace(/\/+$/, '');
  return {
    async request<T>(
      method: string,
      path: string,
      body?: unknown,
      extra: RequestOptions = {},
    ): Promise<T> {
      const headers: Record<string, string> = { accept: 'application/json' };
      if (extra.ifMatch !== undefined) headers['if-match'] = `"${extra.ifMatch}"`;
      if (options.token) headers.authorization = `Bearer ${options.token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      let res: Response;
      try {
        res = await fetch(base + path, {
          method: method.toUpperCase(),
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (cause) {
        const reason = (cause as { cause?: { message?: string } }).cause?.message;
        throw new CliError('UNREACHABLE', `cannot reach ${base}${reason ? `: ${reason}` : ''}`, {
          cause,
        });
      }
      const text = await res.text();
      let parsed: unknown;
      if (text !== '') {
        try {
          parsed = JSON.parse(text);
        } catch (cause) {
          if (res.ok) {
            throw new CliError('BAD_RESPONSE', `${method} ${path}: response is not JSON`, {
              status: res.status,
              cause,
            });
          }
        }
      }
      if (!res.ok) throw errorFromBody(res.status, res.statusText, parsed);
      return parsed as T;
    },
  };
}
