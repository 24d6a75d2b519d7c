// The sign-in page: exchange an API key for the HttpOnly session cookie.
import { api } from "./js/api.js";

const form = document.getElementById("login");
const error = document.getElementById("login-error");

function next() {
  const target = new URLSearchParams(window.location.search).get("next") || "/";
  // Only same-site paths: never an open redirect.
  return target.startsWith("/") && !target.startsWith("//") ? target : "/";
}

api.session().then(() => window.location.replace(next())).catch(() => {});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button");
  const key = form.elements.api_key.value.trim();
  error.hidden = true;
  button.disabled = true;
  try {
    await api.login(key);
    window.location.replace(next());
  } catch (err) {
    error.textContent = err.status === 401 ? "That API key is not valid." : err.message;
    error.hidden = false;
    form.elements.api_key.select();
  } finally {
    button.disabled = false;
  }
});
