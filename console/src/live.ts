// Notifications as they come: a Socket.IO connection on the host's socket
// port, toasts for `notification` (in an ARIA live region), and a modal for
// `critical_alert` that keeps focus until the clinician acknowledges it. An
// acknowledgement on any of the user's devices closes the modal on all.
import { io, type Socket } from "socket.io-client";

import { socketUrl, type Notification } from "./api";
import { h } from "./dom";
import type { Session } from "./session";

/** Called with each notification that arrives, for views that show its patient. */
export type Listener = (notification: Notification) => void;

const listeners = new Set<Listener>();
let socket: Socket | null = null;
/** Critical alerts not yet acknowledged, oldest first; the first is shown. */
const waiting: Notification[] = [];

/** Calls `listener` with every notification until the returned function is called. */
export function onNotification(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Connects the user's device; resent critical alerts arrive again until acknowledged. */
export async function connect(session: Session): Promise<void> {
  disconnect();
  socket = io(await socketUrl(), { auth: { token: session.token } });
  socket.on("notification", (n: Notification) => {
    toast(n);
    listeners.forEach((l) => l(n));
  });
  socket.on("critical_alert", (n: Notification) => {
    if (!waiting.some((w) => w.notificationId === n.notificationId)) waiting.push(n);
    listeners.forEach((l) => l(n));
    showCritical();
  });
  socket.on("notification_acknowledged", (notice: { notificationId: string; acknowledged?: { by?: string } }) =>
    settled(notice.notificationId, notice.acknowledged?.by ?? "someone"),
  );
  socket.on("connect_error", (e: Error) => status(`Notifications unavailable: ${e.message}`));
  socket.on("connect", () => status(""));
}

/** Closes the device's connection (sign-out). */
export function disconnect(): void {
  socket?.close();
  socket = null;
  waiting.length = 0;
  dialog().close();
}

function status(text: string): void {
  document.getElementById("who")?.setAttribute("title", text);
}

function toast(n: Notification): void {
  const region = document.getElementById("toasts")!;
  const item = h("div", { class: "toast" }, h("strong", {}, String(n.title ?? "")), " ", String(n.message ?? ""));
  region.append(item);
  setTimeout(() => item.remove(), 8000);
}

const dialog = () => document.getElementById("critical") as HTMLDialogElement;

function showCritical(): void {
  const n = waiting[0];
  const modal = dialog();
  if (!n) {
    modal.close();
    return;
  }
  document.getElementById("critical-title")!.textContent = String(n.title ?? "Critical alert");
  document.getElementById("critical-message")!.textContent = String(n.message ?? "");
  const patient = document.getElementById("critical-patient")!;
  patient.replaceChildren(
    typeof n.patientId === "string" ? h("a", { href: `#/patients/${encodeURIComponent(n.patientId)}` }, `Open the chart of ${n.patientId}`) : "",
  );
  document.getElementById("critical-state")!.textContent = "";
  const button = document.getElementById("critical-ack") as HTMLButtonElement;
  button.disabled = false;
  button.onclick = () => acknowledge(n.notificationId);
  if (!modal.open) modal.showModal();
  button.focus();
}

/** Acknowledges a notification from this device; the host's reply. */
export function acknowledgeById(notificationId: string): Promise<{ ok: boolean; error?: string; acknowledged?: { by?: string } }> {
  return new Promise((resolve) => {
    if (!socket) resolve({ ok: false, error: "not connected" });
    else socket.emit("acknowledge", { notificationId }, resolve);
  });
}

function acknowledge(notificationId: string): void {
  const button = document.getElementById("critical-ack") as HTMLButtonElement;
  button.disabled = true;
  void acknowledgeById(notificationId).then((reply) => {
    if (reply.ok) settled(notificationId, reply.acknowledged?.by ?? "you");
    else {
      button.disabled = false;
      document.getElementById("critical-state")!.textContent = `Not acknowledged: ${reply.error ?? "try again"}`;
    }
  });
}

/** An alert acknowledged here or on another device: say by whom, then show the next. */
function settled(notificationId: string, by: string): void {
  const index = waiting.findIndex((w) => w.notificationId === notificationId);
  if (index < 0) return;
  const shown = index === 0 && dialog().open;
  waiting.splice(index, 1);
  if (!shown) return;
  document.getElementById("critical-state")!.textContent = `Acknowledged by ${by}`;
  setTimeout(showCritical, 600);
}

// The critical alert must be acknowledged, not dismissed: Escape does not close it.
dialog().addEventListener("cancel", (event) => event.preventDefault());
