// The console's shell: the login form (an API token, as `bulkhead login --token` takes it), the
// navigation, and which view the URL's hash names. Views live in views/, one per concern.
import { useEffect, useState } from 'preact/hooks';
import type { ConsoleApi } from './api.js';
import { AgentsPage } from './views/agents.js';
import { FlowsPage } from './views/flows.js';
import { ImpactPage } from './views/impact.js';
import { MapPage } from './views/map.js';
import { RevisionsPage } from './views/revisions.js';

const VIEWS = {
  map: { title: 'Map', Page: MapPage },
  flows: { title: 'Flows', Page: FlowsPage },
  agents: { title: 'Agents', Page: AgentsPage },
  revisions: { title: 'Revisions', Page: RevisionsPage },
  impact: { title: 'Draft impact', Page: ImpactPage },
} as const;
type ViewId = keyof typeof VIEWS;

const viewOf = (hash: string): ViewId => {
  const id = hash.replace(/^#\/?/, '');
  return id in VIEWS ? (id as ViewId) : 'map';
};

function Login(props: { api: ConsoleApi; onLogin(): void }) {
  const [error, setError] = useState('');
  return (
    <form
      id="login"
      onSubmit={async (e) => {
        e.preventDefault();
        const token = new FormData(e.currentTarget).get('token');
        try {
          await props.api.login(String(token ?? '').trim());
          props.onLogin();
        } catch (err) {
          setError((err as Error).message);
        }
      }}
    >
      <h2>Sign in</h2>
      <p class="muted">
        An API token, as for <code>bulkhead login --token</code>. It is kept in this tab only.
      </p>
      <label>
        API token <input name="token" type="password" autocomplete="off" required />
      </label>
      <button type="submit">Sign in</button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

export function App(props: { api: ConsoleApi }) {
  const [signedIn, setSignedIn] = useState(props.api.token !== null);
  const [view, setView] = useState<ViewId>(viewOf(location.hash));
  useEffect(() => {
    const onHash = () => setView(viewOf(location.hash));
    addEventListener('hashchange', onHash);
    const off = props.api.onLogout(() => setSignedIn(false));
    return () => {
      removeEventListener('hashchange', onHash);
      off();
    };
  }, [props.api]);
  const { Page } = VIEWS[view];
  return (
    <>
      <header>
        <h1>Bulkhead</h1>
        {signedIn && (
          <nav>
            {(Object.keys(VIEWS) as ViewId[]).map((id) => (
              <a key={id} href={`#/${id}`} class={id === view ? 'active' : ''}>
                {VIEWS[id].title}
              </a>
            ))}
            <button type="button" onClick={() => props.api.logout()}>
              Sign out
            </button>
          </nav>
        )}
      </header>
      <main>
        {signedIn ? (
          <Page api={props.api} />
        ) : (
          <Login api={props.api} onLogin={() => setSignedIn(true)} />
        )}
      </main>
    </>
  );
}
