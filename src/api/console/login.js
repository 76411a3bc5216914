// The console's login page: POST /console/login with the token or the password. On success
// voxline sets the session cookie and `/` serves the console.
const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  error.textContent = "";
  const secret = document.getElementById("secret").value;
  try {
    const r = await fetch("/console/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ secret }),
      credentials: "same-origin",
    });
    if (r.ok) {
      location.replace("/" + location.hash);
      return;
    }
    const body = await r.json().catch(() => ({}));
    error.textContent = body.error || `login failed (HTTP ${r.status})`;
  } catch (e) {
    error.textContent = `login failed: ${e.message}`;
  }
});
