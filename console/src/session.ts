// The signed-in user: their token (kept for the tab only) and what it says.
const KEY = "projector.token";

/** What the console reads from a token; the host checks it on every call. */
export interface Session {
  token: string;
  sub: string;
  role: string;
  name?: string;
}

function decode(token: string): Session | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
    if (typeof json.sub !== "string" || typeof json.role !== "string") return null;
    if (typeof json.exp === "number" && json.exp * 1000 < Date.now()) return null;
    return { token, sub: json.sub, role: json.role, name: json.name || undefined };
  } catch {
    return null;
  }
}

/** The session of this tab, if signed in with a token not yet expired. */
export function current(): Session | null {
  const token = sessionStorage.getItem(KEY);
  return token ? decode(token) : null;
}

/** Signs in with `token`; `null` when it is not a token the console can read. */
export function signIn(token: string): Session | null {
  const session = decode(token.trim());
  if (session) sessionStorage.setItem(KEY, session.token);
  return session;
}

/** Forgets the token. */
export function signOut(): void {
  sessionStorage.removeItem(KEY);
}
