// The admin area: plugins (deploy, roll back, rebuild, pause, resume), dead
// letters (retry, discard) and the audit trail.
import { ApiError, get, post, put, type AuditEntry, type DeadLetter, type PluginStatus } from "../api";
import { h, show, time } from "../dom";

function failure(e: unknown): Node {
  return h("p", { class: "error", role: "alert" }, e instanceof ApiError ? `${e.status}: ${e.message}` : String(e));
}

function action(label: string, run: () => Promise<unknown>, after: () => void, out: HTMLElement): HTMLButtonElement {
  return h("button", { type: "button", onclick: () => void run().then(after, (e) => out.replaceChildren(failure(e))) }, label);
}

function plugins(out: HTMLElement): HTMLElement {
  const box = h("section", { "aria-labelledby": "plugins-title" }, h("h2", { id: "plugins-title" }, "Plugins"));
  const body = h("div");
  const refresh = async () => {
    try {
      const list = await get<PluginStatus[]>("/api/plugins");
      body.replaceChildren(
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Plugin", "Version", "Hash", "State", "Lag", ""].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            list.map((p) =>
              h(
                "tr",
                {},
                h("td", {}, p.name),
                h("td", {}, p.version),
                h("td", { title: p.hash }, p.hash.slice(0, 12)),
                h("td", {}, p.state, p.error ? h("span", { class: "error" }, ` ${p.error}`) : ""),
                h("td", {}, String(p.lag ?? "—")),
                h(
                  "td",
                  {},
                  p.state === "paused"
                    ? action("Resume", () => post(`/api/plugins/${p.name}/resume`), refresh, out)
                    : action("Pause", () => post(`/api/plugins/${p.name}/pause`), refresh, out),
                  " ",
                  action("Rebuild", () => post(`/api/plugins/${p.name}/rebuild`), refresh, out),
                  " ",
                  p.previous ? action("Roll back", () => post(`/api/plugins/${p.name}/rollback`), refresh, out) : "",
                ),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      body.replaceChildren(failure(e));
    }
  };
  const name = h("input", { id: "deploy-name", required: true, pattern: "[a-z][a-z0-9-]*" });
  const file = h("input", { id: "deploy-file", type: "file", accept: ".wasm", required: true });
  const deploy = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        const chosen = file.files?.[0];
        if (!chosen) return;
        void put(`/api/plugins/${encodeURIComponent(name.value)}`, chosen).then(refresh, (e) => out.replaceChildren(failure(e)));
      },
    },
    h("label", { for: "deploy-name" }, "Deploy plugin "),
    name,
    " ",
    h("label", { for: "deploy-file" }, "component "),
    file,
    " ",
    h("button", { type: "submit" }, "Deploy"),
  );
  box.append(body, deploy);
  void refresh();
  return box;
}

function deadLetters(out: HTMLElement): HTMLElement {
  const body = h("div");
  const refresh = async () => {
    try {
      const letters = await get<DeadLetter[]>("/api/dead-letters?status=dead");
      body.replaceChildren(
        letters.length === 0
          ? h("p", { class: "muted" }, "No dead letters.")
          : h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Id", "Plugin", "Subject", "Patient", "Reason", ""].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                {},
                letters.map((d) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, String(d.id)),
                    h("td", {}, d.plugin),
                    h("td", {}, d.subject),
                    h("td", {}, d.patientId ?? "—"),
                    h("td", {}, d.reason),
                    h(
                      "td",
                      {},
                      action("Retry", () => post(`/api/dead-letters/${d.id}/retry`), refresh, out),
                      " ",
                      action("Discard", () => post(`/api/dead-letters/${d.id}/discard`), refresh, out),
                    ),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      body.replaceChildren(failure(e));
    }
  };
  void refresh();
  return h("section", { "aria-labelledby": "dead-title" }, h("h2", { id: "dead-title" }, "Dead letters"), body);
}

function audit(): HTMLElement {
  const body = h("div", { "aria-live": "polite" });
  const patient = h("input", { id: "audit-patient", name: "patientId" });
  const user = h("input", { id: "audit-user", name: "userId" });
  const form = h(
    "form",
    {
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const params = new URLSearchParams({ limit: "100" });
        if (patient.value) params.set("patientId", patient.value);
        if (user.value) params.set("userId", user.value);
        try {
          const entries = await get<AuditEntry[]>(`/api/audit?${params}`);
          body.replaceChildren(
            h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["When", "User", "Action", "Patient", "Status"].map((c) => h("th", { scope: "col" }, c)))),
              h("tbody", {}, entries.map((e) => h("tr", {}, h("td", {}, time(e.at)), h("td", {}, e.userId), h("td", {}, e.action), h("td", {}, e.patientId ?? "—"), h("td", {}, String(e.status ?? "—"))))),
            ),
          );
        } catch (e) {
          body.replaceChildren(failure(e));
        }
      },
    },
    h("label", { for: "audit-patient" }, "Patient "),
    patient,
    " ",
    h("label", { for: "audit-user" }, "User "),
    user,
    " ",
    h("button", { type: "submit" }, "Search the audit trail"),
  );
  return h("section", { "aria-labelledby": "audit-title" }, h("h2", { id: "audit-title" }, "Audit trail"), form, body);
}

/** The admin area. */
export function adminView(): void {
  const out = h("div", { "aria-live": "assertive" });
  show(h("h1", {}, "Admin"), out, plugins(out), deadLetters(out), audit());
}
