// The entry point Vite builds: the console on the tab's sessionStorage, mounted on #app.
import { render } from 'preact';
import { createConsoleApi } from './api.js';
import { App } from './app.js';
import './style.css';

render(<App api={createConsoleApi(sessionStorage)} />, document.getElementById('app')!);
