// A walk through HA Ingestor's UI in a real browser (Debian's chromium through npm's
// playwright-core), against the demo's Home Assistant: tests/e2e/test_ui_walk.py runs it,
// scripts/screenshots takes the README's pictures with it. One JSON argument:
//   url, user, password        Home Assistant and the login the demo printed
//   storage_url, enrichment_url, token, wrong_url, wrong_url_error
//                              the config flow: the wrong URL first, its error text
//   glob                       the exclude pattern the options get
//   dashboard                  the dashboard view (docs/dashboard.yaml as JSON)
//   shots                      a folder for screenshots ("" for none)
//   timeout                    seconds any one condition may take
//   steps                      optional: the steps to run after logging in (default the
//                              walk; "outage" shows the forwarder while storage is away)
// Each step prints "ok: ..." with what it saw; the first failure ends the walk with exit
// code 1 and a screenshot of that moment in shots (or the working folder).
// Home Assistant's frontend lives in open shadow roots: playwright's CSS and text
// locators pierce them; deepText() reads the text of a page the same way.
const { chromium } = await import(process.env.PLAYWRIGHT_CORE ?? "playwright-core");

const args = JSON.parse(process.argv[2]);
const timeout = (args.timeout ?? 120) * 1000;
const FORWARDER = "sensor.ha_ingestor_forwarder";
const DISABLED_ENTITIES = [`${FORWARDER}_events_per_minute`, `${FORWARDER}_delivery_latency_p95`];

function ok(what) {
  console.log(`ok: ${what}`);
}

async function shot(page, name) {
  if (args.shots) await page.screenshot({ path: `${args.shots}/${name}.png` });
}

// The text the page shows, shadow roots included, one element's text per line.
function deepText(page) {
  return page.evaluate(() => {
    const parts = [];
    const walk = (node) => {
      if (node.nodeType === Node.TEXT_NODE) {
        const text = node.textContent.trim();
        if (text) parts.push(text);
        return;
      }
      if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) {
        return;
      }
      if (node.nodeType === Node.ELEMENT_NODE) {
        const style = getComputedStyle(node);
        if (style.display === "none" || style.visibility === "hidden") return;
        if (["STYLE", "SCRIPT", "TEMPLATE"].includes(node.tagName)) return;
        if (node.shadowRoot) walk(node.shadowRoot);
        if (node.tagName === "SLOT") {
          for (const child of node.assignedNodes()) walk(child);
        }
      }
      for (const child of node.childNodes) walk(child);
    };
    walk(document.body);
    return parts.join("\n");
  });
}

// Wait until the page's text matches; the match.
async function waitForText(page, pattern, what) {
  const deadline = Date.now() + timeout;
  let text = "";
  while (Date.now() < deadline) {
    text = await deepText(page);
    const found = text.match(pattern);
    if (found) return found;
    await page.waitForTimeout(500);
  }
  throw new Error(`${what}: ${pattern} not on the page within ${timeout / 1000} s`);
}

// Wait until the page shows the text, in an element's own text or as a field's value
// (shadow roots included).
async function waitForShown(page, wanted) {
  await page.waitForFunction(
    (text) => {
      const shows = (el) =>
        el.tagName === "INPUT"
          ? el.value === text
          : [...el.childNodes].some(
              (node) => node.nodeType === Node.TEXT_NODE && node.textContent.includes(text),
            );
      const find = (root) => {
        for (const el of root.querySelectorAll("*")) {
          if (shows(el) && el.checkVisibility()) return true;
          if (el.shadowRoot && find(el.shadowRoot)) return true;
        }
        return false;
      };
      return find(document);
    },
    wanted,
    { timeout, polling: 500 },
  );
}

function hassState(page, entityId) {
  return page.evaluate(
    (id) => document.querySelector("home-assistant")?.hass?.states?.[id]?.state,
    entityId,
  );
}

async function waitForState(page, entityId, test, what) {
  const handle = await page.waitForFunction(
    ([id, source]) => {
      const state = document.querySelector("home-assistant")?.hass?.states?.[id]?.state;
      // biome-ignore lint: the test comes as source text from the walk
      return state !== undefined && new Function("s", `return ${source}`)(state) ? state : null;
    },
    [entityId, test],
    { timeout, polling: 500 },
  );
  const state = await handle.jsonValue();
  ok(`${what}: ${entityId} is ${state}`);
  return state;
}

function callWS(page, message) {
  return page.evaluate(
    (msg) => document.querySelector("home-assistant").hass.callWS(msg),
    message,
  );
}

// Within the app, as its own links do: no reload, the session stays. Again until the
// app is there (right after logging in it may still route to its default page).
async function navigate(page, path) {
  const deadline = Date.now() + timeout;
  for (;;) {
    await page.evaluate((to) => {
      history.pushState(null, "", to);
      window.dispatchEvent(new CustomEvent("location-changed", { detail: { replace: false } }));
    }, path);
    try {
      await page.waitForFunction((to) => location.pathname === to, path, { timeout: 2000 });
      await page.waitForTimeout(1000); // still there a second later: not routed away
      if ((await page.evaluate(() => location.pathname)) === path) return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
  }
}

async function logIn(page) {
  await page.goto(args.url);
  await page.locator('input[name="username"]').fill(args.user);
  await page.locator('input[name="password"]').fill(args.password);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("home-assistant")?.hass?.user, null, {
    timeout,
  });
  const name = await page.evaluate(
    () => document.querySelector("home-assistant").hass.user.name,
  );
  ok(`logged in as ${args.user} (${name})`);
}

// A form's text field by its label, which is the field's accessible name in both
// frontends; getByLabel finds the older one's fields (mwc) but not the newer one's (2026:
// Web Awesome's wa-input, whose label is slotted into its shadow root).
function field(page, label) {
  return page.getByRole("textbox", { name: label });
}

async function submit(page) {
  await page.getByRole("button", { name: /^submit$/i }).click();
}

async function addIntegration(page) {
  await navigate(page, `/config/integrations/dashboard`);
  await page.getByRole("button", { name: /add integration/i }).first().click();
  // Typed into the dialog's own search field: keys typed elsewhere open Home
  // Assistant's quick bar.
  await page.locator("dialog-add-integration input").first().fill("HA Ingestor");
  await page.locator("ha-integration-list-item").filter({ hasText: "HA Ingestor" }).first().click();
  await page.getByText("Connect to the HA Ingestor services").waitFor();
  ok("Add integration → HA Ingestor opened the form");

  await field(page, "Storage URL").fill(args.wrong_url);
  await field(page, "API token").fill(args.token);
  await submit(page);
  await page.getByText(args.wrong_url_error).first().waitFor();
  ok(`a wrong storage URL (${args.wrong_url}): the form says "${args.wrong_url_error.slice(0, 60)}…"`);

  await field(page, "Storage URL").fill(args.storage_url);
  await field(page, "Enrichment URL").fill(args.enrichment_url);
  await field(page, "API token").fill(args.token);
  await submit(page);
  // Home Assistant says it made the entry and offers areas for its devices (the newer
  // frontend names them in fields, with "Skip and finish").
  await waitForShown(page, "HA Ingestor forwarder");
  await shot(page, "config-flow-done");
  await page.getByRole("button", { name: /^(skip and )?finish$/i }).click();
  ok("the right storage URL: the entry is made, with the HA Ingestor forwarder device");
  await waitForState(page, `${FORWARDER}_status`, "true", "the entry's entities exist");
}

async function enableRateSensors(page) {
  // Events per minute and latency start disabled; the dashboard shows them. Home
  // Assistant reloads the entry about 30 s after they are enabled.
  for (const entityId of DISABLED_ENTITIES) {
    await callWS(page, {
      type: "config/entity_registry/update",
      entity_id: entityId,
      disabled_by: null,
    });
  }
  ok(`enabled ${DISABLED_ENTITIES.join(", ")}`);
}

async function openOptions(page) {
  await navigate(page, `/config/integrations/integration/ha_ingestor`);
  await page.getByRole("button", { name: "Configure" }).first().click();
  await page.getByText("HA Ingestor options").first().waitFor();
}

async function changeOptions(page) {
  await openOptions(page);
  await shot(page, "options-flow");
  await page.getByRole("button", { name: /add exclude entity patterns/i }).click();
  await field(page, "Exclude entity patterns").last().fill(args.glob);
  await submit(page);
  await page.getByRole("button", { name: /^finish$/i }).click();
  ok(`options: excluded the pattern ${args.glob}`);
  // Saved: the dialog shows it when opened again.
  await navigate(page, `/config/integrations/integration/ha_ingestor`);
  await page.getByText(/HA Ingestor \(/).first().waitFor();
  await shot(page, "integration");
  await openOptions(page);
  const values = await page.locator("input").evaluateAll((inputs) => inputs.map((i) => i.value));
  if (!values.includes(args.glob)) {
    throw new Error(`the options dialog opened again shows ${JSON.stringify(values)}`);
  }
  ok(`options opened again show ${args.glob}`);
  // Closed as it was opened: submitted unchanged.
  await submit(page);
  await page.getByRole("button", { name: /^finish$/i }).click();
  await page.getByText("HA Ingestor options").first().waitFor({ state: "hidden" });
}

async function deviceDelivered(page) {
  const found = await waitForText(page, /Events delivered\n([\d,.]+)/, "Events delivered");
  return Number(found[1].replace(/[,.]/g, ""));
}

async function openDevice(page) {
  const deviceId = await page.evaluate(
    (id) => document.querySelector("home-assistant").hass.entities[id]?.device_id,
    `${FORWARDER}_status`,
  );
  await navigate(page, `/config/devices/device/${deviceId}`);
  await page.getByText("HA Ingestor forwarder").first().waitFor();
}

async function devicePage(page) {
  await openDevice(page);
  await waitForText(page, /Status\nDelivering/, "Status");
  const first = await deviceDelivered(page);
  const deadline = Date.now() + timeout;
  let now = first;
  while (now <= first && Date.now() < deadline) {
    await page.waitForTimeout(1000);
    now = await deviceDelivered(page);
  }
  if (now <= first) throw new Error(`Events delivered stayed at ${first}`);
  ok(`device page: Events delivered went from ${first} to ${now}, Status Delivering`);
  await shot(page, "forwarder-device");
}

async function deadLetters(page) {
  // Storage refuses a unit longer than its tag limit (255 characters): each state
  // change of this sensor becomes a dead letter; over 100 of them raise the issue.
  await page.evaluate(async () => {
    const hass = document.querySelector("home-assistant").hass;
    for (let i = 0; i < 101; i++) {
      await hass.callApi("POST", "states/sensor.ui_walk_refused", {
        state: String(i),
        attributes: { unit_of_measurement: "u".repeat(300) },
      });
    }
  });
  await waitForState(page, `${FORWARDER}_dead_letters`, "Number(s) > 100", "storage refused");
  await navigate(page, `/config/repairs`);
  const title = page.getByText(/events could not be delivered/).first();
  await title.waitFor();
  ok(`repairs: ${(await title.textContent()).trim()}`);
  await shot(page, "repair-issue");
  await title.click();
  await page.getByText("Delete all dead letters").first().waitFor();
  await shot(page, "repair-fix-flow");
  await page.getByText("Replay all dead letters").first().waitFor();
  await page.getByText("Delete all dead letters").first().click();
  await waitForState(page, `${FORWARDER}_dead_letters`, "s === '0'", "fix flow: deleted");
  const close = page.getByRole("button", { name: /^(close|finish|ok)$/i });
  if (await close.count()) await close.first().click();
  await page.getByText(/events could not be delivered/).first().waitFor({ state: "detached" });
  ok("the dead letters issue is gone from Repairs");
}

async function dashboard(page) {
  const urlPath = "ha-ingestor-walk";
  const dashboards = await callWS(page, { type: "lovelace/dashboards/list" });
  if (!dashboards.some((d) => d.url_path === urlPath)) {
    await callWS(page, {
      type: "lovelace/dashboards/create",
      url_path: urlPath,
      title: "Forwarding",
      icon: "mdi:transit-connection-variant",
      mode: "storage",
      show_in_sidebar: true,
      require_admin: false,
    });
  }
  await callWS(page, {
    type: "lovelace/config/save",
    url_path: urlPath,
    config: { views: [args.dashboard] },
  });
  ok("dashboard saved through the websocket API (lovelace/config/save)");
  await waitForState(page, `${FORWARDER}_events_per_minute`, "Number(s) > 0", "events per minute");
  await page.waitForFunction(
    (path) => document.querySelector("home-assistant").hass.panels?.[path],
    urlPath,
    { timeout },
  );
  await navigate(page, `/${urlPath}/0`);
  await waitForText(page, /Status\nDelivering/, "dashboard: Status");
  await waitForText(page, /Outbox depth\n\d+/, "dashboard: Outbox depth");
  await waitForText(page, /Dead letters\n0/, "dashboard: Dead letters");
  await waitForText(page, /Storage\nConnected/, "dashboard: storage connectivity");
  await waitForText(page, /Enrichment\nConnected/, "dashboard: enrichment connectivity");
  await waitForText(page, /Events per minute/, "dashboard: events per minute graph");
  await waitForText(page, /Delivery latency/, "dashboard: latency graph");
  // The three history graphs draw once the recorder answers.
  await page.waitForFunction(
    () => {
      const charts = [];
      const find = (root) => {
        for (const el of root.querySelectorAll("*")) {
          if (el.tagName === "HA-CHART-BASE") charts.push(el);
          if (el.shadowRoot) find(el.shadowRoot);
        }
      };
      find(document);
      return charts.length >= 3;
    },
    null,
    { timeout, polling: 500 },
  );
  const text = await deepText(page);
  for (const bad of ["History integration disabled", "No state history found"]) {
    if (text.includes(bad)) throw new Error(`dashboard: a graph says ${bad}`);
  }
  ok("dashboard: status, outbox, dead letters, connectivity and both graphs are filled");
  await shot(page, "dashboard");
}

// Storage stopped by the caller: the forwarder waits, the outbox grows, and after the
// Delivery problem time (60 s) the problem sensor turns on.
async function outage(page) {
  await openDevice(page);
  await waitForText(page, /Status\nWaiting for a service/, "Status during the outage");
  await waitForText(page, /Delivery problem\nProblem/, "Delivery problem during the outage");
  ok("outage: Status waits for a service, Delivery problem is on");
  await shot(page, "forwarder-outage");
  await page.getByText("Status", { exact: true }).first().click();
  await page.getByText("Attributes", { exact: true }).first().click();
  await waitForText(page, /Last error/i, "Status attributes");
  await page.waitForTimeout(1000); // for the picture: the attributes finish unfolding
  ok("outage: the Status attributes name the service and the last error");
  await shot(page, "forwarder-outage-status");
}

const STEPS = {
  addIntegration,
  enableRateSensors,
  changeOptions,
  reloaded: (page) =>
    // The entry reloads once the enabled sensors are there; the counters start again.
    waitForState(page, `${FORWARDER}_events_per_minute`, "true", "the entry reloaded"),
  devicePage,
  deadLetters,
  dashboard,
  outage,
};
const WALK = [
  "addIntegration",
  "enableRateSensors",
  "changeOptions",
  "reloaded",
  "devicePage",
  "deadLetters",
  "dashboard",
];

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
  page.setDefaultTimeout(timeout);
  try {
    await logIn(page);
    for (const step of args.steps ?? WALK) await STEPS[step](page);
  } catch (err) {
    await page
      .screenshot({ path: `${args.shots || "."}/ui-walk-failure.png` })
      .catch(() => undefined);
    throw err;
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(`failed: ${err.message ?? err}`);
  process.exit(1);
});
