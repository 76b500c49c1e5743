// Flows as the agents reported them, newest first, with the API's own filters.
import type { Endpoint, FlowView } from '@bulkhead/api';
import { useState } from 'preact/hooks';
import type { ConsoleApi } from '../api.js';
import { query, sinceOf, type WindowId } from '../filters.js';
import { labelText, Status, TextField, timeText, useLoad, WindowField } from '../ui.js';

const endpointText = (e: Endpoint) => (e.workload ? `${e.workload} (${e.address})` : e.address);

export function FlowsPage(props: { api: ConsoleApi }) {
  const [workload, setWorkload] = useState('');
  const [label, setLabel] = useState('');
  const [verdict, setVerdict] = useState('');
  const [window, setWindow] = useState<WindowId>('7d');
  const flows = useLoad(
    () =>
      props.api.get<{ flows: FlowView[] }>(
        `/v1/flows${query({
          workload,
          label,
          verdict,
          since: sinceOf(window, new Date()),
          limit: '500',
        })}`,
      ),
    [workload, label, verdict, window],
  );
  return (
    <section>
      <h2>Flows</h2>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <TextField label="Workload" name="workload" value={workload} set={setWorkload} />
        <TextField label="Label" name="label" placeholder="role=db" value={label} set={setLabel} />
        <label>
          Verdict{' '}
          <select
            name="verdict"
            value={verdict}
            onChange={(e) => setVerdict(e.currentTarget.value)}
          >
            <option value="">any</option>
            <option value="allowed">allowed</option>
            <option value="would-deny">would-deny</option>
            <option value="denied">denied</option>
          </select>
        </label>
        <WindowField label="Time" value={window} set={setWindow} />
      </form>
      <Status of={flows}>
        {({ flows: rows }) =>
          rows.length === 0 ? (
            <p class="muted">No flows match.</p>
          ) : (
            <table id="flows">
              <thead>
                <tr>
                  <th>Source</th>
                  <th>Destination</th>
                  <th>Service</th>
                  <th>Verdict</th>
                  <th>Rule</th>
                  <th>Reported by</th>
                  <th>Connections</th>
                  <th>Last seen</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((f) => (
                  <tr
                    key={`${f.reportedBy}|${f.direction}|${f.src.address}|${f.dst.address}|${f.protocol}|${f.port}`}
                  >
                    <td title={labelText(f.src.labels)}>{endpointText(f.src)}</td>
                    <td title={labelText(f.dst.labels)}>{endpointText(f.dst)}</td>
                    <td>
                      {f.protocol}/{f.port}
                    </td>
                    <td>
                      <span class={`verdict verdict-${f.verdict}`}>{f.verdict}</span>
                    </td>
                    <td>{f.ruleId || 'no rule'}</td>
                    <td>
                      {f.reportedBy} ({f.direction})
                    </td>
                    <td>{f.connections}</td>
                    <td>{timeText(f.lastSeen)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Status>
    </section>
  );
}
