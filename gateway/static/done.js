// The development return page (/uui/done): shows the outcome the capture page sent back.
import { describe } from "./messages.js";

const params = new URLSearchParams(location.search);
const error = params.get("error");
const token = params.get("access_token") || "";

document.getElementById("title").textContent = error ? "Not completed" : "Completed";
document.getElementById("outcome").textContent = error
  ? describe(error)
  : "The capture page finished without an error.";
document.body.dataset.outcome = error ? "error" : "success";

const rows = [
  ["Outcome", error ? `failed (error=${error})` : "success (no error)"],
  ["State", params.get("state") ?? "(none)"],
  ["Token", token ? `${token.slice(0, 12)}…${token.slice(-8)}` : "(none)"],
];
const details = document.getElementById("details");
for (const [name, value] of rows) {
  const term = document.createElement("dt");
  term.textContent = name;
  const data = document.createElement("dd");
  data.textContent = value;
  details.append(term, data);
}
