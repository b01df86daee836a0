// Escalations: the urgent notifications nobody acknowledged in time, sent
// to the user's role (the escalation chain's roles: charge nurse, attending…).
import { ApiError, get, type Notification } from "../api";
import { h, show, time } from "../dom";
import { acknowledgeById, onNotification } from "../live";

/** The role's notifications, newest first, each with its state. */
export function escalationsView(): () => void {
  const list = h("div", { "aria-live": "polite" });
  async function refresh(): Promise<void> {
    try {
      const all = await get<Notification[]>("/api/notifications?limit=1000");
      const mine = all.filter((n) => n.userId.startsWith("role:")).reverse();
      const rows = mine.map((n) =>
        h(
          "tr",
          {},
          h("td", {}, time(n.createdAt)),
          h("td", {}, typeof n.patientId === "string" ? h("a", { href: `#/patients/${encodeURIComponent(n.patientId)}` }, n.patientId) : "—"),
          h("td", {}, String(n.title ?? ""), h("br"), h("span", { class: "muted" }, String(n.message ?? ""))),
          h(
            "td",
            {},
            n.acknowledged
              ? `acknowledged by ${n.acknowledged.by ?? "?"} ${time(n.acknowledged.at)}`
              : h("button", { type: "button", onclick: () => void acknowledgeById(n.notificationId).then(refresh) }, "Acknowledge"),
          ),
        ),
      );
      list.replaceChildren(
        rows.length
          ? h("table", {}, h("thead", {}, h("tr", {}, ["Escalated", "Patient", "Alert", "State"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))
          : h("p", {}, "No escalations for your role."),
      );
    } catch (e) {
      list.replaceChildren(h("p", { class: "error", role: "alert" }, e instanceof ApiError ? e.message : String(e)));
    }
  }
  show(h("section", {}, h("h1", {}, "Escalations"), list));
  void refresh();
  return onNotification(() => void refresh());
}
