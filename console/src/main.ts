// The clinician console: signs in, then routes by the URL's hash.
import "./style.css";
import { h } from "./dom";
import { connect, disconnect } from "./live";
import { current, signOut, type Session } from "./session";
import { adminView } from "./views/admin";
import { chartView } from "./views/chart";
import { escalationsView } from "./views/escalations";
import { searchView } from "./views/search";
import { signInView } from "./views/signin";

/** Stops what the view shown last keeps running (a chart's refresh). */
let leave: (() => void) | void;

function route(): void {
  leave?.();
  leave = undefined;
  const session = current();
  if (!session) {
    showNav(null);
    signInView((s) => {
      void connect(s);
      location.hash = "#/search";
      route();
    });
    return;
  }
  showNav(session);
  const [, view, id] = location.hash.split("/");
  if (view === "patients" && id) leave = chartView(decodeURIComponent(id));
  else if (view === "escalations") leave = escalationsView();
  else if (view === "admin") adminView();
  else searchView();
}

function showNav(session: Session | null): void {
  const nav = document.getElementById("nav")!;
  nav.hidden = !session;
  document.getElementById("who")!.replaceChildren(session ? h("span", {}, `${session.name ?? session.sub} (${session.role})`) : "");
  for (const link of nav.querySelectorAll<HTMLElement>("[data-roles=admin]")) link.hidden = session?.role !== "admin";
}

document.getElementById("sign-out")!.addEventListener("click", () => {
  signOut();
  disconnect();
  location.hash = "";
  route();
});
window.addEventListener("hashchange", route);
const session = current();
if (session) void connect(session);
route();
