// Patient search: by name, MRN or id, page by page.
import { ApiError, get, type SearchPage } from "../api";
import { h, show } from "../dom";

/** The search form and its results. */
export function searchView(): void {
  const results = h("div", { "aria-live": "polite" });
  const input = h("input", { id: "q", type: "search", name: "q", placeholder: "Name, MRN or patient id", autocomplete: "off" });

  async function run(cursor?: string): Promise<void> {
    const params = new URLSearchParams({ q: input.value, limit: "25" });
    if (cursor) params.set("cursor", cursor);
    try {
      const page = await get<SearchPage>(`/api/aggregate/patients?${params}`);
      const rows = page.patients.map((p) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `#/patients/${encodeURIComponent(p.patientId ?? "")}` }, [p.name?.family, p.name?.given].filter(Boolean).join(", ") || (p.patientId ?? ""))),
          h("td", {}, p.mrn ?? "—"),
          h("td", {}, p.birthDate ?? "—"),
          h("td", {}, p.gender ?? "—"),
        ),
      );
      const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Patient"), h("th", {}, "MRN"), h("th", {}, "Born"), h("th", {}, "Gender"))), h("tbody", {}, rows));
      const more = page.nextCursor ? h("button", { type: "button", onclick: () => run(page.nextCursor ?? undefined) }, "Next page") : null;
      results.replaceChildren(rows.length ? table : h("p", {}, "No patient matches."), more ?? "");
    } catch (e) {
      results.replaceChildren(h("p", { class: "error", role: "alert" }, e instanceof ApiError ? e.message : String(e)));
    }
  }

  const form = h(
    "form",
    { role: "search", onsubmit: (event: Event) => (event.preventDefault(), void run()) },
    h("label", { for: "q" }, "Find a patient "),
    input,
    " ",
    h("button", { type: "submit" }, "Search"),
  );
  show(h("section", {}, h("h1", {}, "Patients"), form, results));
  input.focus();
}
