// Drives Debian's chromium (playwright-core) through voxline's web console, as
// tests/api/console_chromium.rs asks:
//
//   node tests/browser/console.mjs BASE_URL SECRET AGENT NEW_INSTRUCTIONS REPLY_TEXT
//
// 1. Before a login: `/` is the login page, and neither the console's script nor the API
//    answers; a wrong secret is refused on the page.
// 2. Logs in with SECRET, opens the live view, and prints {"step": "live"}: the test then
//    starts the call (SIPp, with the realtime mock as the agent).
// 3. Waits for the call's row and, in its transcript panel, a caller line and the agent's
//    line REPLY_TEXT; then for the row to go when the call ends.
// 4. Finds the call in the history by searching for its record id, opens its record, reads
//    the transcript there, and plays its recording in the page's <audio> (the browser asks
//    for byte ranges: the statuses are reported).
// 5. Opens the API agent AGENT in the editor, sets its instructions to NEW_INSTRUCTIONS and
//    saves (a new version).
// 6. Logs out; the API refuses the browser again.
//
// Prints one JSON line per step, the last with everything observed ({"result": ...}). Any
// failure is reported as {"error": "...", "at": STEP} (exit 1), with the page's console lines
// on stderr.
import { chromium } from "playwright-core";

const [base, secret, agent, newInstructions, replyText] = process.argv.slice(2);
const say = (o) => console.log(JSON.stringify(o));
const out = { pageErrors: [] };
let step = "launch";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => console.error(`page ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => {
    out.pageErrors.push(e.message);
    console.error(`page error: ${e.message}`);
  });
  const recordingStatuses = [];
  page.on("response", (r) => {
    if (r.url().includes("/recording")) recordingStatuses.push(r.status());
  });
  const wait = (sel, timeout = 15000) => page.waitForSelector(sel, { timeout });

  step = "before login";
  await page.goto(`${base}/`);
  await wait("#login-form");
  out.scriptBeforeLogin = (await page.request.get(`${base}/console/app.js`)).status();
  out.recordsBeforeLogin = (await page.request.get(`${base}/records`)).status();
  await page.fill("#secret", "not the secret");
  await page.click("#login-button");
  await wait("#login-error:not(:empty)");
  out.wrongSecretError = await page.textContent("#login-error");

  step = "login";
  await page.fill("#secret", secret);
  await page.click("#login-button");
  await wait("#view[data-view=live]");
  await page.waitForFunction(() => document.querySelector("#live-status")?.textContent === "live", null, {
    timeout: 15000,
  });
  say({ step: "live" });

  step = "live call";
  const row = await wait("#live-calls tr[data-call]", 30000);
  out.liveRecordId = await row.getAttribute("data-record");
  await row.click();
  // Polled from here: the page's CSP (no eval) rules out waitForFunction with an argument.
  const liveLines = () =>
    page.$$eval("#live-transcript .line", (ls) =>
      ls.map((l) => ({ role: l.dataset.role, text: l.querySelector(".text").textContent })),
    );
  const deadline = Date.now() + 30000;
  for (;;) {
    out.liveLines = await liveLines();
    const caller = out.liveLines.some((l) => l.role === "caller" && l.text);
    const agentLine = out.liveLines.some((l) => l.role === "agent" && l.text === replyText);
    if (caller && agentLine) break;
    if (Date.now() > deadline) throw new Error(`no caller and agent lines: ${JSON.stringify(out.liveLines)}`);
    await page.waitForTimeout(200);
  }
  out.liveRow = await page.$eval(`#live-calls tr[data-record="${out.liveRecordId}"]`, (tr) =>
    [...tr.cells].map((c) => c.textContent),
  );
  out.hangupButton = (await page.$("#hangup")) !== null;
  say({ step: "transcript", lines: out.liveLines.length });
  await page.waitForSelector(`#live-calls tr[data-record="${out.liveRecordId}"]`, {
    state: "detached",
    timeout: 30000,
  });
  say({ step: "ended" });

  step = "history";
  await page.click('#nav a[data-view="history"]');
  await wait("#history-filters");
  await page.fill("#history-q", out.liveRecordId);
  await page.click('#history-filters button[type="submit"]');
  await wait(`#history-rows tr[data-record="${out.liveRecordId}"]`);
  out.historyRows = await page.$$eval("#history-rows tr[data-record]", (rs) => rs.map((r) => r.dataset.record));
  await page.click(`#history-rows tr[data-record="${out.liveRecordId}"]`);
  await wait("#record-title");
  out.recordTitle = await page.textContent("#record-title");
  out.recordLines = await page.$$eval("#record-transcript .line", (ls) =>
    ls.map((l) => ({ role: l.dataset.role, text: l.querySelector(".text").textContent })),
  );

  step = "recording";
  await wait("#record-audio");
  out.playback = await page.evaluate(async () => {
    const a = document.querySelector("#record-audio");
    a.muted = true;
    await a.play();
    await new Promise((resolve, reject) => {
      const check = () => {
        if (a.error) reject(new Error(`media error ${a.error.code}: ${a.error.message}`));
        else if (a.currentTime >= 1.0 || a.ended) resolve();
        else setTimeout(check, 100);
      };
      check();
    });
    return { duration: a.duration, currentTime: a.currentTime, readyState: a.readyState };
  });
  out.recordingStatuses = recordingStatuses;

  step = "agent editor";
  await page.click('#nav a[data-view="agents"]');
  await wait(`#agents tr[data-agent="${agent}"]`);
  await page.click(`#agents tr[data-agent="${agent}"]`);
  await wait("#agent-instructions");
  out.agentVersionBefore = await page.textContent("#agent-version");
  await page.fill("#agent-instructions", newInstructions);
  await page.click("#agent-save");
  await wait("#agent-saved[data-version]");
  out.agentSavedVersion = Number(await page.getAttribute("#agent-saved", "data-version"));
  out.agentDefinition = JSON.parse(await page.inputValue("#agent-definition"));
  out.agentVersionRows = await page.$$eval("#agent-versions tr[data-version]", (rs) => rs.map((r) => Number(r.dataset.version)));

  step = "logout";
  await page.click("#logout");
  await wait("#login-form");
  out.recordsAfterLogout = (await page.request.get(`${base}/records`)).status();
  say({ result: out });
} catch (e) {
  say({ error: String(e && e.stack ? e.stack : e), at: step, partial: out });
  process.exitCode = 1;
} finally {
  await browser.close();
}
