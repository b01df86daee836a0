// The HTTP API, typed by api-types.ts (generated from the host's OpenAPI
// document: `npm run generate-api`).
import type { components } from "./api-types";
import { current } from "./session";

export type Schemas = components["schemas"];
export type PluginStatus = Schemas["PluginStatus"];
export type DeadLetter = Schemas["DeadLetter"];
export type AuditEntry = Schemas["AuditEntry"];
export type SearchPage = Schemas["SearchPage"];
export type Notification = Schemas["Notification"] & Record<string, unknown>;
/** A chart: the patient plugin's document, whose shape the plugin owns. */
export type Chart = Record<string, any>;

/** An API error: its status and the host's `{error, code}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: BodyInit): Promise<T> {
  const session = current();
  const response = await fetch(path, {
    method,
    body,
    headers: session ? { authorization: `Bearer ${session.token}` } : {},
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, answer?.code ?? "error", answer?.error ?? response.statusText);
  }
  return answer as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string) => call<T>("POST", path);
export const put = <T>(path: string, body: BodyInit) => call<T>("PUT", path, body);

/** Where the notification sockets listen: the host's other port. */
export async function socketUrl(): Promise<string> {
  const settings = await call<{ socketPort: number }>("GET", "/console/settings.json");
  return `${location.protocol}//${location.hostname}:${settings.socketPort}`;
}
