// Sign-in with a token: from the hospital's identity provider, or in
// development from `projector token --sub u-dr-smith --role physician`.
import { h, show } from "../dom";
import { signIn, type Session } from "../session";

/** The sign-in form; `done` gets the session once a readable token is given. */
export function signInView(done: (session: Session) => void): void {
  const error = h("p", { class: "error", role: "alert" });
  const input = h("textarea", { id: "token", rows: "4", cols: "60", required: true, "aria-describedby": "token-help" });
  const form = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        const session = signIn(input.value);
        if (session) done(session);
        else error.textContent = "That is not a valid, unexpired token.";
      },
    },
    h("label", { for: "token" }, "Token"),
    h("br"),
    input,
    h("p", { id: "token-help", class: "muted" }, "In development: projector token --sub u-dr-smith --role physician"),
    error,
    h("button", { type: "submit", id: "sign-in" }, "Sign in"),
  );
  show(h("section", {}, h("h1", {}, "Sign in"), form));
}
