// Drives a real browser to voxline's /phone page with a fake microphone: dials, stays
// connected for N seconds, reads the page's window.voxlinePhone (state, the level of the audio
// voxline sent back), hangs up, and prints that as one JSON line. Used by
// tests/sip/phone_chromium.rs, tests/sip/phone_firefox.rs and the realtime phone test.
//
//   node tests/browser/phone.mjs URL WAV SECONDS [chromium|firefox]
//
// chromium: Debian's chromium through playwright-core (CDP); the microphone plays WAV.
// firefox:  Debian's firefox-esr through puppeteer-core (WebDriver BiDi, which stock Firefox
//           speaks; Playwright's Firefox needs its own patched build). Firefox's fake
//           microphone is its built-in tone generator (it cannot play a file), so WAV is unused.
import { chromium } from "playwright-core";
import puppeteer from "puppeteer-core";

const [url, wav, seconds, which = "chromium"] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const settled = () =>
  window.voxlinePhone && ["connected", "failed", "ended"].includes(window.voxlinePhone.state);

async function chromiumPage() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${wav}`,
      "--autoplay-policy=no-user-gesture-required",
      "--no-sandbox",
      // The test runs on loopback: let WebRTC gather 127.0.0.1 candidates too.
      "--allow-loopback-in-peer-connection",
    ],
  });
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`page: ${m.text()}`));
  return {
    browser,
    goto: (u) => page.goto(u),
    waitSettled: () => page.waitForFunction(settled, null, { timeout: 20000 }),
    evaluate: (f) => page.evaluate(f),
    text: (sel) => page.textContent(sel),
    click: (sel) => page.click(sel),
  };
}

async function firefoxPage() {
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
    headless: true,
    extraPrefsFirefox: {
      // A fake microphone (a tone) without a permission prompt.
      "media.navigator.streams.fake": true,
      "media.navigator.permission.disabled": true,
      "media.autoplay.default": 0,
      "media.autoplay.block-webaudio": false,
      // The page is served over plain HTTP on a test address (not localhost), which is
      // not a secure context: let it have the microphone anyway.
      "media.devices.insecure.enabled": true,
      "media.getusermedia.insecure.enabled": true,
      // The test runs on loopback: gather 127.0.0.1 candidates, unobfuscated.
      "media.peerconnection.ice.loopback": true,
      "media.peerconnection.ice.obfuscate_host_addresses": false,
    },
  });
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`page: ${m.text()}`));
  return {
    browser,
    goto: (u) => page.goto(u),
    waitSettled: () => page.waitForFunction(settled, { timeout: 20000 }),
    evaluate: (f) => page.evaluate(f),
    text: (sel) => page.$eval(sel, (e) => e.textContent),
    click: (sel) => page.click(sel),
  };
}

let result = { error: "not run" };
const b = which === "firefox" ? await firefoxPage() : await chromiumPage();
try {
  await b.goto(url);
  await b.waitSettled();
  await sleep(Number(seconds) * 1000);
  result = await b.evaluate(() => ({ ...window.voxlinePhone, userAgent: navigator.userAgent }));
  result.status = await b.text("#status");
  await b.click("#hangup").catch(() => {});
  await sleep(500);
} catch (e) {
  result = { error: String(e) };
} finally {
  await b.browser.close();
}
console.log(JSON.stringify(result));
