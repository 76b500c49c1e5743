// The console's REST client: the operator's API token, kept in sessionStorage (gone with the tab),
// sent as `Authorization: Bearer <token>` exactly as the CLI sends it, to the same REST API.
// Owns the token and the HTTP calls; must not render anything or keep API data.

/** One error type for the console, with the API's stable `code` (or NETWORK / BAD_RESPONSE). */
export class ConsoleError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
  ) {
    super(message);
    this.name = 'ConsoleError';
  }
}

export interface TokenStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ConsoleApi {
  readonly token: string | null;
  login(token: string): Promise<void>;
  logout(): void;
  /** Calls `fn` whenever the token is dropped (sign-out, or a 401 from the API). */
  onLogout(fn: () => void): () => void;
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
}

const TOKEN_KEY = 'bulkhead.apiToken';

export function createConsoleApi(
  storage: TokenStore,
  fetchFn: typeof fetch = (input, init) => fetch(input, init),
): ConsoleApi {
  const listeners = new Set<() => void>();
  async function call<T>(method: string, path: string, body?: unknown, token = api.token) {
    let res: Response;
    try {
      res = await fetchFn(path, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit',
      });
    } catch (err) {
      throw new ConsoleError('NETWORK', `cannot reach the control plane: ${String(err)}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new ConsoleError(
        'BAD_RESPONSE',
        `${method} ${path}: not JSON (${res.status})`,
        res.status,
      );
    }
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      if (res.status === 401) api.logout();
      throw new ConsoleError(e?.code ?? 'HTTP', e?.message ?? `HTTP ${res.status}`, res.status);
    }
    return json as T;
  }
  const api: ConsoleApi = {
    get token() {
      return storage.getItem(TOKEN_KEY);
    },
    // The token is kept only once the API accepts it.
    async login(token) {
      await call('GET', '/v1/agents', undefined, token);
      storage.setItem(TOKEN_KEY, token);
    },
    logout() {
      storage.removeItem(TOKEN_KEY);
      for (const fn of listeners) fn();
    },
    onLogout(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    get: (path) => call('GET', path),
    post: (path, body) => call('POST', path, body),
  };
  return api;
}
