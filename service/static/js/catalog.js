// The queues, built-in task names and states, as the gateway defines them
// (GET /api/v1/catalog): the dashboard keeps no copies. Filled once at start-up.
import { api } from "./api.js";

export const catalog = {
  queues: [], tasks: {}, states: [], terminal: new Set(), system: new Set(),
};

export async function loadCatalog() {
  const body = await api.catalog();
  catalog.queues = body.queues;
  catalog.tasks = Object.fromEntries(body.tasks.map((t) => [t.name, t.queue]));
  catalog.states = body.states;
  for (const state of body.terminal_states) catalog.terminal.add(state);
  for (const name of body.system_tasks) catalog.system.add(name);
}
