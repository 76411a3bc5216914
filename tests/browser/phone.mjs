// Drives Debian's chromium (headless, through playwright-core) to voxline's /phone page with a
// fake microphone playing a WAV file: dials, stays connected for N seconds, reads the page's
// window.voxlinePhone (state, the level of the audio voxline sent back), hangs up, and prints
// that as one JSON line. Used by tests/sip/phone_chromium.rs.
//
//   node tests/browser/phone.mjs URL WAV SECONDS
import { chromium } from "playwright-core";

const [url, wav, seconds] = process.argv.slice(2);
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
let result = { error: "not run" };
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`page: ${m.text()}`));
  await page.goto(url);
  await page.waitForFunction(
    () => window.voxlinePhone && ["connected", "failed", "ended"].includes(window.voxlinePhone.state),
    null,
    { timeout: 20000 },
  );
  await page.waitForTimeout(Number(seconds) * 1000);
  result = await page.evaluate(() => ({ ...window.voxlinePhone }));
  result.status = await page.textContent("#status");
  await page.click("#hangup").catch(() => {});
  await page.waitForTimeout(500);
} catch (e) {
  result = { error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
