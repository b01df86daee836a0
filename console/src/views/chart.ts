// A patient's chart: demographics, allergies, medications, latest vitals,
// diagnoses, encounters, lab results and imaging. While it is open it is
// read again every few seconds and at once when a notification about the
// patient arrives, so new results appear without a reload.
import { ApiError, get, type Chart } from "../api";
import { h, show, time } from "../dom";
import { onNotification } from "../live";

/** How often an open chart is read again. */
const REFRESH_MS = 2000;

const VITALS: [string, string, string][] = [
  ["heartRate", "Heart rate", "/min"],
  ["systolic", "Systolic", "mmHg"],
  ["diastolic", "Diastolic", "mmHg"],
  ["respiratoryRate", "Respiratory rate", "/min"],
  ["temperatureC", "Temperature", "°C"],
  ["spo2", "SpO₂", "%"],
  ["weightKg", "Weight", "kg"],
  ["heightCm", "Height", "cm"],
];

const display = (code: any) => code?.display ?? code?.code ?? "—";

function section(title: string, id: string, body: Node | string): HTMLElement {
  return h("section", { id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), body);
}

function table(head: string[], rows: (Node | string)[][]): Node {
  if (rows.length === 0) return h("p", { class: "muted" }, "None recorded.");
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

function flag(text: string, kind: string): Node {
  return h("span", { class: `flag ${kind}` }, text);
}

function render(chart: Chart, labs: any[], imaging: any[], encounters: any[]): Node[] {
  const name = [chart.name?.given, chart.name?.family].filter(Boolean).join(" ") || chart.patientId;
  const vitals = chart.latestVitals ?? {};
  return [
    h("h1", { id: "chart-title" }, name),
    h(
      "p",
      { id: "demographics" },
      `MRN ${chart.mrn ?? "—"} · born ${chart.birthDate ?? "—"} · ${chart.gender ?? "—"} · id ${chart.patientId}`,
      chart.criticalAlerts ? h("strong", { class: "flag critical" }, ` ${chart.criticalAlerts} open critical alert(s)`) : "",
    ),
    h(
      "div",
      { class: "grid" },
      section(
        "Allergies",
        "allergies",
        table(
          ["Substance", "Reaction", "Criticality", "Status"],
          (chart.allergies ?? []).map((a: any) => [
            display(a.substance),
            a.reaction ?? "—",
            a.criticality === "high" ? flag("HIGH", "high") : a.criticality ?? "—",
            a.clinicalStatus ?? "active",
          ]),
        ),
      ),
      section(
        "Active medications",
        "medications",
        table(
          ["Medication", "Dose", "Status"],
          (chart.medications ?? []).map((m: any) => [display(m.medication), [m.dose, m.route, m.frequency].filter(Boolean).join(" "), m.status ?? "—"]),
        ),
      ),
      section(
        "Latest vitals",
        "vitals",
        table(
          ["Measure", "Value", "Taken"],
          VITALS.filter(([key]) => vitals[key]).map(([key, label, unit]) => [label, `${vitals[key].value} ${unit}`, time(vitals[key].recordedAt)]),
        ),
      ),
      section(
        "Active diagnoses",
        "diagnoses",
        table(["Diagnosis", "Code", "Recorded"], (chart.activeDiagnoses ?? []).map((d: any) => [display(d), d.code ?? "—", time(d.recordedAt)])),
      ),
    ),
    section(
      "Lab results",
      "labs",
      table(
        ["Issued", "Test", "Value", "Flag", "Report"],
        labs.flatMap((report: any) =>
          (report.results ?? []).map((r: any) => [
            time(report.issuedAt),
            display(r.code),
            `${r.value ?? "—"} ${r.unit ?? ""}${r.referenceRange ? ` (${r.referenceRange})` : ""}`,
            h("span", {}, r.interpretation && r.interpretation !== "N" ? flag(r.interpretation, r.interpretation) : "", r.critical ? flag("CRITICAL", "critical") : ""),
            report.reportUrl ? h("a", { href: report.reportUrl, target: "_blank", rel: "noopener" }, "report") : "—",
          ]),
        ),
      ),
    ),
    section(
      "Imaging",
      "imaging",
      table(
        ["Completed", "Study", "Finding", "Images"],
        imaging.map((s: any) => [
          time(s.completedAt),
          `${s.modality ?? ""} ${s.description ?? ""}`,
          s.criticalFinding ? h("span", {}, flag("CRITICAL", "critical"), ` ${s.criticalFinding.finding ?? ""}`) : s.impression ?? "—",
          h("span", {}, (s.images ?? []).filter((i: any) => i.url).map((i: any, n: number) => h("a", { href: i.url, target: "_blank", rel: "noopener" }, `image ${n + 1} `))),
        ]),
      ),
    ),
    section(
      "Encounters",
      "encounters",
      table(
        ["Started", "Class", "Location", "Ended", "Disposition"],
        encounters.map((e: any) => [time(e.startedAt), e.class ?? "—", e.location ?? "—", time(e.endedAt), e.disposition ?? "—"]),
      ),
    ),
  ];
}

/** The chart of `patientId`, kept current while it is shown. */
export function chartView(patientId: string): () => void {
  const id = encodeURIComponent(patientId);
  const body = h("div", { id: "chart", "aria-busy": "true" });
  show(h("p", { class: "muted" }, "Loading…"), body);
  let stopped = false;
  let first = true;
  let last = "";
  async function refresh(): Promise<void> {
    try {
      const [chart, labs, imaging, encounters] = await Promise.all([
        get<Chart>(`/api/aggregate/patients/${id}`),
        get<any[]>(`/api/aggregate/patients/${id}/labs`),
        get<any[]>(`/api/aggregate/patients/${id}/imaging`),
        get<any[]>(`/api/aggregate/patients/${id}/encounters`),
      ]);
      // Presigned links change at every read: compare what the clinician sees.
      const seen = JSON.stringify([chart, labs.map((l) => ({ ...l, reportUrl: undefined })), imaging.length, encounters]);
      if (stopped || seen === last) return;
      last = seen;
      body.replaceChildren(...render(chart, labs, imaging, encounters));
      body.setAttribute("aria-busy", "false");
      if (first) {
        first = false;
        show(body);
      }
    } catch (e) {
      if (stopped) return;
      const text = e instanceof ApiError && e.status === 404 ? `No chart for patient ${patientId}.` : e instanceof Error ? e.message : String(e);
      show(h("h1", {}, "Chart"), h("p", { class: "error", role: "alert" }, text));
    }
  }
  void refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  const unsubscribe = onNotification((n) => {
    if (n.patientId === patientId) void refresh();
  });
  return () => {
    stopped = true;
    clearInterval(timer);
    unsubscribe();
  };
}
