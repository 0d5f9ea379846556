// Drives the coordinator's dashboard in Debian's headless Chromium through playwright-core.
// Usage: node dashboard.mjs URL SCREENSHOT.png
// Protocol with the calling test (one JSON object per line on stdout, commands on stdin):
//   -> {"ready": {...first view...}}         the page shows the running job's workers
//   <- "killed <worker-id>"                  the test killed that worker
//   -> {"updated": {...}}                    the same page (no reload) shows it disconnected,
//                                            and the generation job done
//   -> {"error": "..."}                      something did not appear in time
import { chromium } from "playwright-core";
import readline from "node:readline";

const [url, shot] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(url);
  const view = () => page.evaluate(() => ({
    updates: Number(document.getElementById("updates").textContent),
    numbers: document.getElementById("numbers").textContent,
    filesDone: document.getElementById("files-done").textContent,
    workers: [...document.querySelectorAll(".worker")].map(w => ({ id: w.id.slice(2), state: w.dataset.state })),
    servers: [...document.querySelectorAll("#servers tr")].map(r => r.textContent),
    log: document.getElementById("log").textContent,
    jobs: [...document.querySelectorAll("#jobs tr[data-job]")].map(r => ({ job: r.dataset.job, text: r.textContent })),
  }));
  await page.waitForFunction(() => document.querySelectorAll(".worker").length >= 2
      && Number(document.getElementById("updates").textContent) >= 2, null, { timeout: 20000 });
  say({ ready: await view() });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, id] = line.trim().split(" ");
    if (cmd !== "killed") continue;
    const before = await view();
    await page.waitForFunction((id) => {
      const w = document.getElementById("w-" + id);
      return w && w.dataset.state === "disconnected";
    }, id, { timeout: 30000 });
    await page.waitForFunction((n) => Number(document.getElementById("updates").textContent) > n, before.updates + 2, { timeout: 10000 });
    // The generation job the test dropped shows as done, 1 of 1 task.
    await page.waitForFunction(() => [...document.querySelectorAll("#jobs tr[data-job]")]
        .some(r => r.textContent.includes("done") && r.textContent.includes("1/1")), null, { timeout: 30000 });
    await page.screenshot({ path: shot, fullPage: true });
    say({ updated: await view(), before });
    break;
  }
} catch (e) {
  say({ error: String(e) });
} finally {
  await browser.close();
}
