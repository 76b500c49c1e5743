// Agents and their health: connected, in sync with the desired rule set, the last error.
import type { AgentView } from '@bulkhead/api';
import type { ConsoleApi } from '../api.js';
import { Status, timeText, useLoad } from '../ui.js';

/** One word for an agent's state, worst first. */
export function health(a: AgentView): 'revoked' | 'error' | 'offline' | 'out-of-sync' | 'healthy' {
  if (a.revoked) return 'revoked';
  if (a.lastError !== '') return 'error';
  if (!a.connected) return 'offline';
  return a.inSync ? 'healthy' : 'out-of-sync';
}

export function AgentsPage(props: { api: ConsoleApi }) {
  const agents = useLoad(() => props.api.get<AgentView[]>('/v1/agents'), []);
  return (
    <section>
      <h2>Agents</h2>
      <button type="button" onClick={agents.reload}>
        Refresh
      </button>
      <Status of={agents}>
        {(rows) => (
          <table id="agents">
            <thead>
              <tr>
                <th>Workload</th>
                <th>Host</th>
                <th>Health</th>
                <th>Applied / desired revision</th>
                <th>Last seen</th>
                <th>Version</th>
                <th>Last error</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((a) => (
                <tr key={a.id} data-agent={a.id}>
                  <td>{a.workload}</td>
                  <td>{a.hostname}</td>
                  <td>
                    <span class={`health health-${health(a)}`}>{health(a)}</span>
                  </td>
                  <td>
                    {a.appliedRevision} / {a.desiredRevision ?? '—'}
                  </td>
                  <td>{timeText(a.lastSeen)}</td>
                  <td>{a.version || '—'}</td>
                  <td>{a.lastError || '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Status>
    </section>
  );
}
